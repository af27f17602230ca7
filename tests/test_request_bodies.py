"""Request bodies are read only from callers who may send them, and only as large as the endpoint
accepts: the rest is answered on the headers alone, before a byte of the body is read."""
from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from handlers.base import DEFAULT_BODY_LIMIT
from tests.conftest import GATE_KEY, KIOSK_KEY

MB = 1024 * 1024


async def raw(port: int, head: str, body: bytes = b"", wait: float = 5.0) -> tuple[int, bytes]:
    """Send a request's head (and `body`, if any) on a fresh connection; the status and body of the
    answer, which must come, and the connection close, within `wait` seconds."""
    stream = await TCPClient().connect("127.0.0.1", port)
    try:
        await stream.write(head.encode("latin1") + b"\r\n")
        if body:
            try:
                await stream.write(body)
            except StreamClosedError:
                pass
        answer = await asyncio.wait_for(stream.read_until_close(), wait)
    finally:
        stream.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def head(method: str, path: str, length: int | None, *headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n"


def envelope(body: bytes) -> dict:
    return json.loads(body)


@pytest.mark.gen_test
async def test_an_unauthenticated_body_is_refused_on_its_headers(http_server, http_port):
    # No body is sent at all: an answer that waits for the 10 MB would never come.
    for method, path in (("POST", "/v1/subject"), ("POST", "/v1/visit/signin"), ("PUT", "/v1/config/servers"),
                         ("POST", "/v1/visitor/binding"), ("PUT", "/v1/auth/1")):
        status, body = await raw(http_port, head(method, path, 10 * MB))
        assert status == 401, (path, body)
        assert envelope(body)["code"] == 401


@pytest.mark.gen_test
async def test_an_unknown_key_is_refused_on_its_headers_even_at_the_gate(http_server, http_port):
    status, body = await raw(http_port, head("POST", "/v1/visit/qrcode", 10 * MB, "Authorization: Bearer nope"))
    assert (status, envelope(body)["code"]) == (401, 401)
    status, body = await raw(http_port, head("POST", "/v1/visit/signin", 10 * MB, "Authorization: Bearer nope"))
    assert (status, envelope(body)["code"]) == (401, 401)


@pytest.mark.gen_test
async def test_a_body_larger_than_the_endpoint_accepts_is_refused_on_its_headers(http_server, http_port):
    kiosk = f"Authorization: Bearer {KIOSK_KEY}"
    status, body = await raw(http_port, head("POST", "/v1/visit/signin", DEFAULT_BODY_LIMIT + 1, kiosk))
    assert status == 413
    assert envelope(body)["code"] == 413 and "请求体过大" in envelope(body)["err_msg"]
    # The gate's scan is small: a large one is refused before it is read, on the fast path too.
    status, body = await raw(http_port, head("POST", "/v1/visit/qrcode", 64 * 1024, f"Authorization: Bearer {GATE_KEY}"))
    assert (status, envelope(body)["code"]) == (413, 413)


@pytest.mark.gen_test
async def test_an_application_body_is_refused_over_what_its_photos_need(http_server, http_port, bind_visitor):
    visitor = await bind_visitor()
    cookie = f"Cookie: wx_session={visitor.cookie('wx_session')}"
    status, body = await raw(http_port, head("POST", "/v1/subject", 90 * MB, cookie))
    assert (status, envelope(body)["code"]) == (413, 413)


@pytest.mark.gen_test
async def test_an_application_may_carry_photos_larger_than_other_bodies(bind_visitor, bind_employee, clock):
    await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    photo = base64.b64encode(b"\xff\xd8\xff" + os.urandom(600 * 1024)).decode()
    now = int(clock())
    resp = await visitor.fetch("/v1/subject", "POST", json={
        "subject_type": 1, "name": "张三", "phone": "13900000001", "proposer": "13900000001",
        "interviewee": "李经理", "interviewee_phone": "13800000002", "start_time": now + 600,
        "end_time": now + 3600, "photo": photo, "retinues": [{"name": "随行一", "phone": "13700000011", "photo": photo}],
    })
    assert resp.json()["code"] == 0, resp
    assert resp.json()["data"]["photo"] and resp.json()["data"]["retinues"][0]["photo"]


@pytest.mark.gen_test
async def test_a_chunked_body_is_cut_off_at_the_limit(http_server, http_port):
    # Chunked bodies declare no length: the limit is enforced as they arrive. No last chunk is sent,
    # so only the limit can end this request.
    piece = b"x" * 16 * 1024
    chunks = (b"%x\r\n" % len(piece) + piece + b"\r\n") * (DEFAULT_BODY_LIMIT // len(piece) + 1)
    status, body = await raw(http_port, head("POST", "/v1/visit/signin", None, f"Authorization: Bearer {KIOSK_KEY}",
                                             "Transfer-Encoding: chunked"), chunks)
    assert (status, envelope(body)["code"]) == (413, 413)


@pytest.mark.gen_test
async def test_pages_and_assets_refuse_large_bodies_on_their_headers(http_server, http_port):
    status, _ = await raw(http_port, head("POST", "/h5/static/app.css", 10 * MB))
    assert status in (403, 405)  # refused before its XSRF field could be read
    status, _ = await raw(http_port, head("POST", "/no/such/page", 10 * MB))
    assert status == 413
    status, body = await raw(http_port, head("POST", "/v1/no/such/endpoint", 10 * MB))
    assert (status, envelope(body)["code"]) == (413, 413)
    status, _ = await raw(http_port, head("POST", "/admin/records", 10 * MB))
    assert status == 413
    status, _ = await raw(http_port, head("POST", "/admin/records", 1000))
    assert status == 302  # to the login page, without waiting for the form


@pytest.mark.gen_test
async def test_a_form_with_its_xsrf_field_in_the_body_is_still_accepted(admin_login):
    admin = await admin_login()
    resp = await admin.fetch("/v1/config/retention", "GET")
    assert resp.status in (200, 404)
    # The admin pages post forms whose `_xsrf` is a field of the body, not a header.
    resp = await admin.fetch("/admin/logout", "POST", form={"_xsrf": admin.cookie("_xsrf")}, xsrf=False)
    assert resp.status in (302, 303), resp
    resp = await admin.fetch("/admin/logout", "POST", form={"_xsrf": "forged"}, xsrf=False)
    assert resp.status == 403
