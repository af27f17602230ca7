"""`python server.py` as an operator runs it: embedded databases, clean shutdown, data kept."""
from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import PROCESS_KEY as KEY, ROOT

SERVERS = {"koala_ip": "10.1.2.3", "koala_username": "koala@example.com", "koala_password": "pw-1",
           "cloud_url": "https://visit.example.com"}


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    found, frontier = set(), {pid}
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent and int(entry.name) not in found:
                    found.add(int(entry.name))
                    frontier.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_embedded_databases_start_stop_with_the_server_and_keep_data(servers, tmp_path):
    data_dir = tmp_path / "var"
    server = servers(DATA_DIR=str(data_dir)).start()
    log = server.log.read_text()
    assert "MongoDB: embedded SecantusDB" in log and "Redis: embedded redis-server" in log
    children = children_of(server.proc.pid)
    assert len(children) >= 2
    put = requests.put(server.url + "/v1/config/servers", json=SERVERS,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert put.json()["code"] == 0
    secret = data_dir / "secret_key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    assert server.stop() == 0
    assert not [pid for pid in children if alive(pid)]

    again = servers(DATA_DIR=str(data_dir)).start()
    got = requests.get(again.url + "/v1/config/servers", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert got.json()["data"] == {**SERVERS, "koala_password": "******"}
    assert again.stop(signal.SIGINT) == 0
    assert not children_of(again.proc.pid)


def test_embedded_databases_die_with_a_killed_server(servers, tmp_path):
    server = servers(DATA_DIR=str(tmp_path / "var")).start()
    children = children_of(server.proc.pid)
    server.proc.kill()
    server.proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]


def test_a_second_server_on_the_same_data_dir_refuses_to_start(servers, tmp_path):
    first = servers(DATA_DIR=str(tmp_path / "var")).start()
    second = servers(DATA_DIR=str(tmp_path / "var"))
    with open(second.log, "ab") as out:
        code = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=second.env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=60).returncode
    assert code == 1
    assert "is in use by server pid" in second.log.read_text()
    assert first.proc.poll() is None


def test_external_databases_are_used_and_nothing_is_started(servers, tmp_path, databases):
    server = servers(DATA_DIR=str(tmp_path / "var"), MONGO_URI=databases.mongo_uri, MONGO_DB="process_test",
                     REDIS_URL=databases.redis_url.replace("/0", "/5"), SECRET_KEY="external-secret").start()
    assert children_of(server.proc.pid) == set()
    log = server.log.read_text()
    assert f"MongoDB: {databases.mongo_uri}" in log
    assert "Redis: redis://127.0.0.1" in log
    assert not (tmp_path / "var" / "secret_key").exists()
    assert server.stop() == 0


def test_bad_configuration_is_refused_with_a_message(servers, tmp_path):
    server = servers(DATA_DIR=str(tmp_path / "var"), API_KEYS="janitor:abc")
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=server.env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr
