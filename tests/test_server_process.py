"""`python server.py` as an operator runs it: embedded databases, clean shutdown, data kept."""
from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time

import pymongo
import pytest
import redis
import requests

from tests.processes import KEY, ROOT, alive, children_of

SERVERS = {"koala_ip": "10.1.2.3", "koala_username": "koala@example.com", "koala_password": "pw-1",
           "cloud_url": "https://visit.example.com"}


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
    assert second.run() == 1
    assert "is in use by server pid" in second.log.read_text()
    assert first.proc.poll() is None


def test_external_databases_are_used_and_nothing_is_started(servers, tmp_path, databases):
    server = servers(DATA_DIR=str(tmp_path / "var"), MONGO_URI=databases.mongo_uri, MONGO_DB="process_test",
                     REDIS_URL=databases.redis_url.replace("/0", "/5"), SECRET_KEY="external-secret").start()
    assert children_of(server.proc.pid) == set()
    log = server.log.read_text()
    assert "MongoDB: mongodb://***@127.0.0.1" in log and "Redis: redis://***@127.0.0.1" in log
    assert databases.mongo_uri.split("@")[0] not in log and databases.redis_url.split("@")[0] not in log
    assert not (tmp_path / "var" / "secret_key").exists()
    assert server.stop() == 0


def test_bad_configuration_is_refused_with_a_message(servers, tmp_path):
    server = servers(DATA_DIR=str(tmp_path / "var"), API_KEYS="janitor:abc")
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=server.env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr


def _modes(root) -> dict[str, int]:
    return {str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode) for path in [root, *root.rglob("*")]
            if not path.is_symlink()}


def test_data_dir_is_private_and_the_embedded_databases_need_their_passwords(servers, tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    (data_dir / "left-over.txt").write_text("written by an older version")
    (data_dir / "left-over.txt").chmod(0o644)
    server = servers(DATA_DIR=str(data_dir)).start()
    mongo_uri, redis_url = server.database_urls()
    with redis.Redis.from_url(redis_url) as authed:
        authed.set("k", "v")
        authed.save()  # writes dump.rdb
    assert (data_dir / "redis" / "dump.rdb").exists()
    modes = _modes(data_dir)
    assert {name: oct(mode) for name, mode in modes.items()
            if mode != (0o700 if (data_dir / name).is_dir() else 0o600)} == {}
    assert {"redis/redis.conf", "mongo-credentials.json", "secret_key", "left-over.txt"} <= set(modes)

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    with pymongo.MongoClient(mongo_uri.replace(mongo_uri.split("@")[0] + "@", "mongodb://"),
                             serverSelectionTimeoutMS=5000) as anonymous:
        with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
            anonymous.visitor.settings.find_one()
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as authed:
        assert authed.visitor.settings.find_one({"_id": "secret_key_check"})
    # The passwords are in files only this user reads, not on any command line.
    password = redis_url.split("@")[0].rsplit(":", 1)[1]
    for pid in children_of(server.proc.pid):
        assert password.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()
    assert server.stop() == 0


def test_a_server_with_another_secret_key_refuses_to_start(servers, tmp_path, databases):
    shared = dict(MONGO_URI=databases.mongo_uri, MONGO_DB="key_test", REDIS_URL=databases.redis_url.replace("/0", "/6"),
                  DATA_DIR=str(tmp_path / "var"), ADMIN_USERNAME="admin", ADMIN_PASSWORD="admin-password-1")
    first = servers(SECRET_KEY="the-first-key-0123456789", **shared).start()
    auth = {"Authorization": f"Bearer {KEY}"}
    assert requests.put(first.url + "/v1/config/servers", json=SERVERS, headers=auth, timeout=10).json()["code"] == 0
    admin = requests.Session()
    admin.get(first.url + "/admin/login", timeout=10)
    login = admin.post(first.url + "/admin/login", data={"username": "admin", "password": "admin-password-1",
                                                          "_xsrf": admin.cookies["_xsrf"]}, allow_redirects=False)
    assert login.status_code == 302

    other = servers(SECRET_KEY="another-key-9876543210", **shared)
    assert other.run() == 2
    log = other.log.read_text()
    assert "Refusing to start: SECRET_KEY cannot decrypt" in log
    assert "same SECRET_KEY" in log and "MONGO_URI and REDIS_URL" in log

    # A second process given the same key works with the first one's data and sessions.
    second = servers(SECRET_KEY="the-first-key-0123456789", **shared).start()
    got = admin.get(second.url + "/v1/config/servers", timeout=10).json()
    assert got["code"] == 0 and got["data"]["koala_password"] == "******"
    assert first.stop() == 0 and second.stop() == 0
