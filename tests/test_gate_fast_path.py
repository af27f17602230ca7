"""The gate's fast path (handlers.gatepath): the same answers as GateHandler, with less work per scan."""
import asyncio
import json
import logging

import pytest
import tornado.testing
from tornado.tcpclient import TCPClient

from handlers import visits
from handlers.proxies import ProxiedHTTPServer
from tests.conftest import ADMIN_KEY, GATE_KEY
from tests.test_signin_and_gate import approved_visit, signin, until  # noqa: F401 (a fixture)
from wxapp import gate


@pytest.fixture
def gate_handler_calls(monkeypatch):
    """How many requests reached GateHandler (the rest were answered on the fast path)."""
    calls = []
    prepare = visits.GateHandler.prepare

    def counting(self):
        calls.append(self.request.uri)
        return prepare(self)
    monkeypatch.setattr(visits.GateHandler, "prepare", counting)
    return calls


@pytest.fixture
def passes(approved_visit, anonymous, ctx, background):  # noqa: F811
    """A signed-in visit's QR content, with this process's near cache live."""
    async def make() -> str:
        await approved_visit()
        data = (await signin(anonymous, "13900000001")).json()["data"]
        background.start()
        assert await until(lambda: ctx.near.live)
        return data["qrcode"]
    return make


def comparable(headers) -> dict:
    return {name: value for name, value in headers.get_all() if name != "Date"}


@pytest.mark.gen_test
async def test_a_scan_on_the_fast_path_is_answered_as_gate_handler_answers_it(passes, anonymous, gate_handler_calls,
                                                                               ctx):
    qrcode = await passes()
    first = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": "east-1"}, key=GATE_KEY)
    fast = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": "east-1"}, key=GATE_KEY)
    assert gate_handler_calls == []
    # A form body is GateHandler's to read.
    slow = await anonymous.fetch("/v1/visit/qrcode", "POST", form={"qrcode": qrcode, "gate": "east-1"}, key=GATE_KEY)
    assert gate_handler_calls == ["/v1/visit/qrcode"]
    assert first.body == fast.body == slow.body == b'{"code":0,"err_msg":""}'
    assert comparable(fast.headers) == comparable(slow.headers)
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Content-Type-Options"] == "nosniff"
    await ctx.pass_log.flush()
    logged = await ctx.pass_log.entries()
    assert [(e["code"], e["gate"], e["key_name"]) for e in logged] == [(0, "east-1", "gate (API_KEYS)")] * 3


@pytest.mark.parametrize("body, status, answer", [
    (json.dumps({"gate": "east-1"}), 400, {"code": 400, "err_msg": "缺少参数 qrcode"}),
    ("[1, 2]", 400, {"code": 400, "err_msg": "请求体应为 JSON 对象"}),
    ("{not json", 400, {"code": 400, "err_msg": "请求体不是合法的 JSON"}),
    (json.dumps({"qrcode": "x" * 513}), 400, None),
    (json.dumps({"qrcode": "no-such-token-0123456789"}), 200, {"code": -201, "err_msg": "二维码无效"}),
])
@pytest.mark.gen_test
async def test_a_bad_scan_gets_gate_handlers_answer(configured, anonymous, body, status, answer):
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", body=body.encode(), key=GATE_KEY,
                                 headers={"Content-Type": "application/json"})
    assert resp.status == status
    if answer is not None:
        assert resp.json() == answer
    else:
        assert resp.json()["code"] == 400 and "qrcode" in resp.json()["err_msg"]


@pytest.mark.parametrize("authorization, status, message", [
    ("Bearer not-a-key-0000", 401, "API 密钥无效或已停用"),
    ("Bearer ", 401, "Authorization 请求头应为 Bearer <API 密钥>"),
    ("Basic dXNlcjpwYXNz", 401, "Authorization 请求头应为 Bearer <API 密钥>"),
])
@pytest.mark.gen_test
async def test_a_scan_with_a_bad_key_is_refused(passes, anonymous, authorization, status, message):
    qrcode = await passes()
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode},
                                 headers={"Authorization": authorization})
    assert resp.status == status
    assert resp.json() == {"code": status, "err_msg": message}


@pytest.mark.gen_test
async def test_one_connection_carries_scans_and_refusals_in_turn(passes, http_port):
    qrcode = await passes()
    stream = await TCPClient().connect("127.0.0.1", http_port)
    try:
        for key, expected in [(GATE_KEY, 0), ("wrong-key-0000", 401), (ADMIN_KEY, 0), (GATE_KEY, 0)]:
            body = json.dumps({"qrcode": qrcode}).encode()
            await stream.write(b"POST /v1/visit/qrcode HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer "
                               + key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
            head = (await stream.read_until(b"\r\n\r\n")).decode("latin1")
            length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.startswith("Content-Length")))
            answer = json.loads(await stream.read_bytes(length))
            assert answer["code"] == expected, (key, head, answer)
            assert "Connection: close" not in head
    finally:
        stream.close()


@pytest.mark.gen_test
async def test_behind_a_proxy_the_gates_own_address_is_logged(passes, app, caplog):
    qrcode = await passes()
    sock, port = tornado.testing.bind_unused_port()
    server = ProxiedHTTPServer(app, trusted_proxies=["127.0.0.1"])  # as server.py serves
    server.add_socket(sock)
    stream = await TCPClient().connect("127.0.0.1", port)
    try:
        with caplog.at_level(logging.DEBUG, logger="tornado.access"):
            for key in (GATE_KEY, "unknown-key-0000"):  # answered at once; refused after a Redis read
                body = json.dumps({"qrcode": qrcode}).encode()
                await stream.write(b"POST /v1/visit/qrcode HTTP/1.1\r\nHost: gate\r\nX-Real-Ip: 10.1.2.3\r\n"
                                   b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: "
                                   + str(len(body)).encode() + b"\r\n\r\n" + body)
                head = (await stream.read_until(b"\r\n\r\n")).decode("latin1")
                length = int(next(line.split(":")[1] for line in head.split("\r\n")
                                  if line.startswith("Content-Length")))
                await stream.read_bytes(length)
    finally:
        stream.close()
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any(line.startswith("200 POST /v1/visit/qrcode (10.1.2.3)") for line in lines), lines
    assert any(line.startswith("401 POST /v1/visit/qrcode (10.1.2.3)") for line in lines), lines


async def mget_calls(ctx) -> int:
    return (await ctx.redis.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)


@pytest.mark.gen_test
async def test_gates_scanning_together_after_a_change_cost_one_redis_read(passes, anonymous, ctx):
    qrcode = await passes()
    scan = {"qrcode": qrcode, "gate": "east-1"}
    assert (await anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)).json()["code"] == 0
    key = gate.cache_key(json.loads(qrcode)["qrcode"])
    await ctx.near.changed([key])  # as when the visit changes: every process forgets the token
    before = await mget_calls(ctx)
    answers = await asyncio.gather(*[anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)
                                     for _ in range(20)])
    assert [a.json()["code"] for a in answers] == [0] * 20
    assert await mget_calls(ctx) - before == 1


@pytest.mark.gen_test
async def test_a_shared_read_is_not_kept_once_done(configured, ctx):
    key = gate.cache_key("some-token-0123456789")
    before = await mget_calls(ctx)  # the near cache is not listening here: every call reads Redis
    for _ in range(3):
        principal, values = await ctx.api_keys.authenticate(GATE_KEY, [key])
        assert principal.role == "gate" and values == {key: None}
    assert await mget_calls(ctx) - before == 3
