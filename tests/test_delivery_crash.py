"""`kill -9` of server.py while notifications are being sent: none is lost, and only a send that was
in flight at a kill may arrive twice (WeChat and Aliyun take no idempotency key; CONTRACT §6)."""
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.conftest import TEMPLATE_IDS
from tests.processes import ROOT, Server
from tests.test_visits import application

HOUR = 3600
RECORDS = 20  # invitations, 2 notifications each: the approval, by WeChat and by SMS
EVENT_OF_TEMPLATE = {template: name.rsplit("_", 2)[0] for name, template in TEMPLATE_IDS.items()}


async def start(server: Server) -> Server:
    """Start server.py and wait for it to answer, keeping this IOLoop (and the fakes on it) turning."""
    with open(server.log, "ab") as out:
        server.proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=server.env,
                                       stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log.read_text()
        try:
            resp = await AsyncHTTPClient().fetch(server.url + "/healthz", raise_error=False, request_timeout=2)
            if resp.code == 200:
                return server
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("server did not become healthy:\n" + server.log.read_text())


def received(fakes) -> list[dict]:
    """Every template message and SMS the fakes received, answered or not, as (event, name, channel)
    with `answered`."""
    found = []
    for r in fakes.wechat.requests_to("/cgi-bin/message/template/send"):
        body = r["json"]
        found.append({"key": (EVENT_OF_TEMPLATE[body["template_id"]], body["data"]["keyword1"]["value"], "wechat"),
                      "answered": r["status"] is not None})
    for r in fakes.sms.requests_to("/"):
        params = json.loads(r["query"].get("TemplateParam") or "{}")
        found.append({"key": (EVENT_OF_TEMPLATE[r["query"]["TemplateCode"]], params.get("name"), "sms"),
                      "answered": r["status"] is not None})
    return found


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.gen_test(timeout=240)
async def test_killed_servers_lose_no_notification_and_repeat_only_sends_in_flight(
        bind_visitor, bind_employee, clock, ctx, config, databases, fakes, tmp_path):
    employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    names = {}
    for i in range(RECORDS):
        name = f"访客{i:02d}"
        resp = await employee.fetch("/v1/subject", "POST", json=application(
            "13900000001", now + HOUR + i, now + 2 * HOUR, name=name, proposer="13800000002"))
        names[resp.json()["data"]["id"]] = name
    entries = await ctx.storage.db.outbox.find({}).to_list(None)
    assert len(entries) == 2 * RECORDS
    key_of = {e["_id"]: (e["event"], names[e["record_id"]], e["channel"]) for e in entries}
    for fake in (fakes.wechat, fakes.sms):
        fake.reset()
        fake.delay = 1.5

    env = dict(MONGO_URI=databases.mongo_uri, MONGO_DB=config.mongo_db, REDIS_URL=databases.redis_url,
               SECRET_KEY=config.secret_key, DATA_DIR=str(tmp_path / "var"),
               WECHAT_APP_ID=config.wechat_app_id, WECHAT_APP_SECRET=config.wechat_app_secret,
               WECHAT_TOKEN=config.wechat_token, WECHAT_API_BASE_URL=config.wechat_api_base_url,
               WECHAT_OAUTH_BASE_URL=config.wechat_oauth_base_url, SMS_BACKEND="aliyun",
               ALIYUN_SMS_ENDPOINT=config.aliyun_sms_endpoint, ALIYUN_ACCESS_KEY_ID=config.aliyun_access_key_id,
               ALIYUN_ACCESS_KEY_SECRET=config.aliyun_access_key_secret, SMS_SIGN_NAME=config.sms_sign_name)
    started: list[Server] = []
    in_flight = Counter()  # sends under way at a kill: claimed by the killed process, outcome not written
    claims_seen: set = set()
    try:
        for kill_after in (8, 20):
            server = await start(Server(tmp_path, **env))
            started.append(server)

            async def mid_send():
                got = received(fakes)
                return len(got) >= kill_after and any(not r["answered"] for r in got)
            await until(mid_send, 60, f"{kill_after} messages with one under way")
            server.proc.kill()
            server.proc.wait()
            claimed = [e for e in await ctx.storage.db.outbox.find({"status": "sending"}).to_list(None)
                       if (e["_id"], e["lease_owner"]) not in claims_seen]
            assert claimed, "the kill came while nothing was being sent"
            # One send in flight per channel in a process.
            assert Counter(e["channel"] for e in claimed).most_common(1)[0][1] == 1
            claims_seen |= {(e["_id"], e["lease_owner"]) for e in claimed}
            in_flight.update(key_of[e["_id"]] for e in claimed)

        restarted = time.monotonic()
        started.append(await start(Server(tmp_path, **env)))

        async def all_sent():
            return await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 2 * RECORDS
        await until(all_sent, 60, "every notification to be sent")
        recovery = time.monotonic() - restarted
    finally:
        for server in started:
            server.kill()

    counts = Counter(r["key"] for r in received(fakes))
    assert set(counts) == set(key_of.values())  # none lost
    repeated = {key: n for key, n in counts.items() if n > 1}
    assert all(n <= 1 + in_flight[key] for key, n in counts.items()), (repeated, in_flight)
    print(f"\n{len(counts)} notifications, {sum(counts.values())} sends, repeated {repeated}, "
          f"in flight at the kills {dict(in_flight)}, all sent {recovery:.1f}s after the last restart")
