"""A confirmed write survives `kill -9` of server.py, SecantusDB and redis-server together."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import pymongo
import redis
import redis.asyncio as aioredis
import requests
from tornado.web import create_signed_value

from wxapp.auth import Sessions
from wxapp.security import derive_key

EMPLOYEE = {"_id": "o-crash-employee", "type": "employee", "phone": "13800000002", "name": "李经理",
            "department": "市场部", "subject_id": 1, "avatar": "", "created_at": 0}


def _employee_cookie(server) -> str:
    """Bind an employee and open a WeChat session for them, straight in the server's databases."""
    mongo_uri, redis_url = server.database_urls()
    with pymongo.MongoClient(mongo_uri) as client:
        client.visitor.bindings.insert_one(dict(EMPLOYEE))

    async def session() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await Sessions(client, "wechat", 3600).create({"openid": EMPLOYEE["_id"]})
        finally:
            await client.aclose()

    sid = asyncio.run(session())
    secret = derive_key((server.data_dir / "secret_key").read_text().strip(), "cookie-signing").hex()
    return create_signed_value(secret, "wx_session", sid).decode()


def _invite(url: str, cookie: str, n: int, http=requests) -> requests.Response:
    now = int(time.time())
    return http.post(url + "/v1/subject", timeout=5, cookies={"wx_session": cookie}, json={
        "subject_type": 1, "name": f"访客{n}", "phone": f"139{n:08d}", "proposer": EMPLOYEE["phone"],
        "interviewee": EMPLOYEE["name"], "interviewee_phone": EMPLOYEE["phone"], "start_time": now + 3600,
        "end_time": now + 7200})


class Writers:
    """Invitations in a loop through the API, and INCRs on Redis, until `count` invitations were
    confirmed: then `pids` are killed at once, right after that answer (the worst moment for the
    last confirmed write). Each remembers what was confirmed."""

    def __init__(self, server, cookie: str, pids: list[int], count: int):
        self.server, self.cookie, self.pids, self.count = server, cookie, pids, count
        self.ids: list[int] = []
        self.counter = 0
        self.killed = threading.Event()
        self.threads = [threading.Thread(target=self._invitations), threading.Thread(target=self._redis)]

    def _invitations(self):
        http = requests.Session()
        try:
            for n in range(self.count):
                answer = _invite(self.server.url, self.cookie, len(self.ids) + n, http).json()
                assert answer["code"] == 0, answer
                self.ids.append(answer["data"]["id"])
        finally:
            for pid in self.pids:
                os.kill(pid, signal.SIGKILL)
            self.killed.set()

    def _redis(self):
        client = redis.Redis.from_url(self.server.database_urls()[1], socket_timeout=2)
        try:
            while not self.killed.is_set():
                self.counter = client.incr("crash-test:confirmed")
                time.sleep(0.002)
        except redis.RedisError:
            return
        finally:
            client.close()

    def run(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        for thread in self.threads:
            thread.join(60)
        return self


PER_TRIAL = 9  # 3 trials × 9, and one more after them, stay within an employee's 30 invitations a day


def test_confirmed_writes_survive_kill_9_of_all_three_processes(servers, tmp_path):
    env = {"DATA_DIR": str(tmp_path / "var"), "SMS_BACKEND": "off"}
    server = servers(**env).start()
    cookie = _employee_cookie(server)
    for trial in range(3):
        pids = [server.proc.pid, server.embedded_pid("mongo"), server.embedded_pid("redis")]
        writers = Writers(server, cookie, pids, count=PER_TRIAL).run()
        server.proc.wait()
        assert len(writers.ids) == PER_TRIAL and writers.counter > 10, (len(writers.ids), writers.counter)

        server = servers(**env).start()
        mongo_uri, redis_url = server.database_urls()
        with pymongo.MongoClient(mongo_uri) as client:
            found = {doc["_id"] for doc in client.visitor.records.find({"_id": {"$in": writers.ids}}, {"_id": 1})}
            counter = client.visitor.counters.find_one({"_id": "records"})["seq"]
        lost = sorted(set(writers.ids) - found)
        assert lost == [], f"trial {trial}: {len(lost)} of {len(writers.ids)} confirmed invitations lost: {lost}"
        assert counter >= max(writers.ids), f"trial {trial}: the id counter went back to {counter}"
        with redis.Redis.from_url(redis_url) as client:
            assert int(client.get("crash-test:confirmed")) >= writers.counter
        # The session written before the crashes still works, and the next id is a new one.
        after = _invite(server.url, cookie, 10**7).json()
        assert after["code"] == 0, after
        assert after["data"]["id"] > max(writers.ids)
    assert server.stop() == 0
