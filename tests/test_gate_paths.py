"""The gate's two paths: ordinary scans answered on the connection (handlers.gatepath), everything
else by GateHandler; both decide through wxapp.gate.Gate and answer alike."""
import asyncio
import json
import logging

import pytest
import tornado.testing
from tornado.tcpclient import TCPClient

from handlers import visits
from handlers.proxies import ProxiedHTTPServer
from tests.conftest import ADMIN_KEY, GATE_KEY
from tests.test_signin_and_gate import CountingRedis, approved_visit, signin, until  # noqa: F401 (a fixture)
from wxapp import gate


@pytest.fixture
def gate_handler_calls(monkeypatch):
    """The requests that reached GateHandler (the rest were answered on the connection)."""
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


async def exchange(stream, key: str, body: bytes, extra: bytes = b"") -> tuple[str, dict]:
    """One scan over a kept-alive connection: the answer's head and envelope."""
    await stream.write(b"POST /v1/visit/qrcode HTTP/1.1\r\nHost: gate\r\n" + extra + b"Authorization: Bearer "
                       + key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                       + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = (await stream.read_until(b"\r\n\r\n")).decode("latin1")
    length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.startswith("Content-Length")))
    return head, json.loads(await stream.read_bytes(length))


@pytest.mark.gen_test
async def test_a_held_scan_is_answered_on_the_connection_as_gate_handler_answers_it(passes, anonymous,
                                                                                     gate_handler_calls, ctx):
    qrcode = await passes()
    scan = {"qrcode": qrcode, "gate": "east-1"}
    first = await anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)
    assert gate_handler_calls == ["/v1/visit/qrcode"]  # the key and the token were read: now they are held
    held = await anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)
    assert gate_handler_calls == ["/v1/visit/qrcode"]
    # A form body is GateHandler's to read.
    form = await anonymous.fetch("/v1/visit/qrcode", "POST", form=scan, key=GATE_KEY)
    assert gate_handler_calls == ["/v1/visit/qrcode"] * 2
    assert first.body == held.body == form.body == b'{"code":0,"err_msg":""}'
    assert comparable(held.headers) == comparable(form.headers) == comparable(first.headers)
    assert held.headers["Cache-Control"] == "no-store" and held.headers["X-Content-Type-Options"] == "nosniff"
    await ctx.pass_log.flush()
    logged = await ctx.pass_log.entries()
    assert [(e["code"], e["gate"], e["key_name"]) for e in logged] == [(0, "east-1", "gate (API_KEYS)")] * 3


@pytest.mark.gen_test
async def test_a_held_scan_is_decided_without_waiting(passes, anonymous, ctx):
    qrcode = await passes()
    scan = gate.SCAN.load({"qrcode": qrcode, "gate": "east-1"})
    principal = ctx.api_keys.authenticate_now(GATE_KEY)
    assert principal is None and ctx.gate.scan_now(principal, scan) is None  # nothing held yet
    assert (await anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)).json()["code"] == 0
    principal, _ = ctx.api_keys.authenticate_now(GATE_KEY)
    assert ctx.gate.scan_now(principal, scan) == 0
    assert ctx.gate.scan_now(principal, {**scan, "qrcode": "{not json"}) == gate.UNKNOWN


@pytest.mark.parametrize("body, status, answer", [
    (json.dumps({"gate": "east-1"}), 400, {"code": 400, "err_msg": "缺少参数 qrcode"}),
    ("[1, 2]", 400, {"code": 400, "err_msg": "请求体应为 JSON 对象"}),
    ("{not json", 400, {"code": 400, "err_msg": "请求体不是合法的 JSON"}),
    ('{"qrcode": "no-such-token-0123456789", "x": NaN}', 400,
     {"code": 400, "err_msg": "请求体不是合法的 JSON"}),
    (json.dumps({"qrcode": "x" * 513}), 400, None),
    (json.dumps({"qrcode": "no-such-token-0123456789"}), 200, {"code": -201, "err_msg": "二维码无效"}),
])
@pytest.mark.gen_test
async def test_a_bad_scan_gets_gate_handlers_answer(configured, gate_path, anonymous, body, status, answer):
    for _ in range(2):  # the second time with the key held
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
async def test_a_scan_with_a_bad_key_is_refused(passes, gate_path, anonymous, authorization, status, message):
    qrcode = await passes()
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode},
                                 headers={"Authorization": authorization})
    assert resp.status == status
    assert resp.json() == {"code": status, "err_msg": message}


@pytest.mark.gen_test
async def test_one_connection_carries_scans_and_refusals_in_turn(passes, gate_path, http_port):
    qrcode = await passes()
    body = json.dumps({"qrcode": qrcode}).encode()
    stream = await TCPClient().connect("127.0.0.1", http_port)
    try:
        unknown = json.dumps({"qrcode": "no-such-token-0123456789"}).encode()
        for key, scan, expected in [(GATE_KEY, body, 0), (GATE_KEY, unknown, -201), (GATE_KEY, body, 0),
                                    (ADMIN_KEY, body, 0), (GATE_KEY, b'{"qrcode": 1}', 400), (GATE_KEY, body, 0),
                                    (GATE_KEY, b"{not json", 400), (GATE_KEY, unknown, -201), (GATE_KEY, body, 0)]:
            head, answer = await exchange(stream, key, scan)
            assert answer["code"] == expected, (key, head, answer)
            assert "Connection: close" not in head
    finally:
        stream.close()


@pytest.mark.gen_test
async def test_an_unexpected_error_is_a_500_envelope_and_the_connection_stays(passes, gate_path, http_port, ctx,
                                                                              monkeypatch):
    qrcode = await passes()
    body = json.dumps({"qrcode": qrcode}).encode()
    stream = await TCPClient().connect("127.0.0.1", http_port)
    try:
        assert (await exchange(stream, GATE_KEY, body))[1]["code"] == 0  # the key and token are held now

        def broken(entry):
            raise RuntimeError("the gate log is broken")
        with monkeypatch.context() as patch:
            patch.setattr(ctx.pass_log, "record", broken)
            head, answer = await exchange(stream, GATE_KEY, body)
        assert head.startswith("HTTP/1.1 500")
        assert answer == {"code": 500, "err_msg": "服务器内部错误，请稍后再试"}
        assert (await exchange(stream, GATE_KEY, body))[1]["code"] == 0
    finally:
        stream.close()


@pytest.mark.gen_test
async def test_behind_a_proxy_the_gates_own_address_is_logged_and_https_answered_so(passes, gate_path, app, caplog):
    qrcode = await passes()
    sock, port = tornado.testing.bind_unused_port()
    server = ProxiedHTTPServer(app, trusted_proxies=["127.0.0.1"])  # as server.py serves
    server.add_socket(sock)
    stream = await TCPClient().connect("127.0.0.1", port)
    body = json.dumps({"qrcode": qrcode}).encode()
    try:
        with caplog.at_level(logging.DEBUG, logger="tornado.access"):
            # read first, then held; malformed; held again; an unknown key, refused on its headers
            # after a Redis read (and the connection closed)
            for key, scan, address in ((GATE_KEY, body, "10.1.2.3"), (GATE_KEY, body, "10.1.2.3"),
                                       (GATE_KEY, b"[]", "10.1.2.4"), (GATE_KEY, body, "10.1.2.5"),
                                       ("unknown-key-0000", body, "10.1.2.3")):
                forwarded = f"X-Real-Ip: {address}\r\nX-Forwarded-Proto: https\r\n".encode()
                head, _ = await exchange(stream, key, scan, forwarded)
                assert "Strict-Transport-Security: max-age=31536000" in head, head
    finally:
        stream.close()
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert sum(line.startswith("200 POST /v1/visit/qrcode (10.1.2.3)") for line in lines) == 2, lines
    assert any(line.startswith("401 POST /v1/visit/qrcode (10.1.2.3)") for line in lines), lines
    assert any(line.startswith("400 POST /v1/visit/qrcode (10.1.2.4)") for line in lines), lines
    assert any(line.startswith("200 POST /v1/visit/qrcode (10.1.2.5)") for line in lines), lines


@pytest.mark.gen_test
async def test_gates_scanning_together_after_a_change_cost_one_redis_read(passes, gate_path, anonymous, ctx,
                                                                          monkeypatch):
    qrcode = await passes()
    scan = {"qrcode": qrcode, "gate": "east-1"}
    assert (await anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)).json()["code"] == 0
    key = gate.cache_key(json.loads(qrcode)["qrcode"])
    await ctx.near.changed([key])  # as when the visit changes: every process forgets the token
    heard = ctx.near.generation
    assert await until(lambda: ctx.near.generation > heard)  # this process heard its own change too
    monkeypatch.setattr(ctx.gate_cache, "redis", CountingRedis(ctx.gate_cache.redis))
    answers = await asyncio.gather(*[anonymous.fetch("/v1/visit/qrcode", "POST", json=scan, key=GATE_KEY)
                                     for _ in range(20)])
    assert [a.json()["code"] for a in answers] == [0] * 20
    assert ctx.gate_cache.redis.reads == 1


@pytest.mark.gen_test
async def test_a_shared_read_is_not_kept_once_done(configured, ctx, monkeypatch):
    monkeypatch.setattr(ctx.gate_cache, "redis", CountingRedis(ctx.gate_cache.redis))
    for _ in range(3):  # the near cache is not listening here: every lookup reads Redis
        assert await ctx.gate_cache.lookup("some-token-0123456789") == {"x": 1}
    assert ctx.gate_cache.redis.reads == 3
