"""server.py restarts an embedded database that dies, and gives up loudly on one that keeps dying."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import redis
import requests

from tests.processes import KEY, wait_until

SERVERS = {"koala_ip": "10.1.2.3", "koala_username": "koala@example.com", "koala_password": "pw-1",
           "cloud_url": "https://visit.example.com"}


def _kill(server, name: str) -> int:
    pid = server.embedded_pid(name)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_killed_embedded_databases_are_restarted_with_their_data(servers, tmp_path):
    server = servers(DATA_DIR=str(tmp_path / "var")).start()
    ports = {name: item["port"] for name, item in server.health()["data"]["embedded"].items()}
    auth = {"Authorization": f"Bearer {KEY}"}
    assert requests.put(server.url + "/v1/config/servers", json=SERVERS, headers=auth, timeout=10).json()["code"] == 0
    with redis.Redis.from_url(server.database_urls()[1]) as client:
        client.set("kept", "yes")

    for name in ("redis", "mongo"):
        old = _kill(server, name)
        health = wait_until(lambda: (h := server.health()).get("code") == 0
                            and h["data"]["embedded"][name]["restarts"] == 1 and h, timeout=15)
        assert health, f"/healthz did not come back after {name} was killed: {server.health()}"
        assert health["data"]["embedded"][name] == {"state": "running", "port": ports[name], "restarts": 1}
        assert not Path(f"/proc/{old}").exists(), f"the killed {name} (pid {old}) was not reaped"
        assert server.embedded_pid(name) != old

    got = requests.get(server.url + "/v1/config/servers", headers=auth, timeout=10).json()
    assert got["data"] == {**SERVERS, "koala_password": "******"}
    with redis.Redis.from_url(server.database_urls()[1]) as client:
        assert client.get("kept") == b"yes"
    log = server.log.read_text()
    assert "Embedded redis-server (pid" in log and "restarting it on port %d" % ports["redis"] in log
    assert "Embedded SecantusDB restarted" in log
    assert server.stop() == 0


def test_an_embedded_database_that_keeps_crashing_is_given_up_on(servers, tmp_path):
    data_dir = tmp_path / "var"
    server = servers(DATA_DIR=str(data_dir)).start()
    # From now on redis-server cannot start: its configuration holds a line it refuses.
    with open(data_dir / "redis" / "redis.conf", "a") as conf:
        conf.write("no-such-directive yes\n")
    _kill(server, "redis")

    health = wait_until(lambda: (h := server.health()).get("data", {}).get("embedded", {}).get("redis", {})
                        .get("state") == "failed" and h, timeout=30)
    assert health, server.health()
    assert health["code"] == 503
    assert health["err_msg"].startswith("内嵌数据库反复崩溃，已停止自动重启")
    reason = health["data"]["embedded"]["redis"]["reason"]
    assert "redis-server exited 6 times within 60s" in reason and "redis.log" in reason
    assert health["data"]["mongo"] == "ok"
    log = server.log.read_text()
    assert "CRITICAL wxapp.embedded: Embedded redis-server: giving up" in log
    attempts = log.count("restarting it on port")
    assert attempts == 5
    wait_until(lambda: False, timeout=2)
    assert server.log.read_text().count("restarting it on port") == attempts  # no loop
    assert server.proc.poll() is None
