"""`python server.py` under clients that send too much or too slowly: connections that dribble
their headers or body are closed after REQUEST_TIMEOUT, and big bodies do not grow the process."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClient
from tornado.web import create_signed_value

import server as server_module
from handlers.visits import APPLICATION_MAX_BODY, MAX_RETINUES
from tests.processes import KEY as PROCESS_KEY
from wxapp.config import Config
from wxapp.context import build_context
from wxapp.security import derive_key

KIOSK_KEY = "process-test-kiosk-key"
MB = 1024 * 1024


SECRET = "limits-secret"


def databases_env(databases) -> dict:
    return {"MONGO_URI": databases.mongo_uri, "MONGO_DB": "limits_" + uuid.uuid4().hex[:8],
            "REDIS_URL": databases.redis_url.replace("/0", "/7"), "SECRET_KEY": SECRET}


@pytest.fixture
def server(servers, tmp_path, databases):
    """server.py on the session's databases, with a REQUEST_TIMEOUT of one second."""
    return servers(DATA_DIR=str(tmp_path / "var"), REQUEST_TIMEOUT="1", **databases_env(databases),
                   API_KEYS=f"admin:{PROCESS_KEY},kiosk:{KIOSK_KEY}").start()


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def seconds_until_closed(sock: socket.socket, trickle: bytes, limit: float = 10.0) -> float:
    """Send `trickle` a byte every 0.1 s until the server closes the connection; how long that took."""
    started = time.monotonic()
    sock.settimeout(0.1)
    for byte in trickle * 1000:
        if time.monotonic() - started > limit:
            break
        try:
            sock.send(bytes([byte]))
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:  # reset: closed
            return time.monotonic() - started
    return time.monotonic() - started


def test_the_request_timeout_is_30_seconds_unless_configured():
    options = server_module.http_server_options(Config())
    assert options["idle_connection_timeout"] == 30 and options["body_timeout"] == 30
    assert options["max_body_size"] == APPLICATION_MAX_BODY
    assert Config.from_env({"REQUEST_TIMEOUT": "2.5"}).request_timeout == 2.5


def test_a_client_dribbling_its_headers_is_disconnected(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/visit/signin HTTP/1.1\r\nHost: x\r\n")
        assert seconds_until_closed(sock, b"X-Slow: yes\r\n") < 4


def test_a_client_that_sends_nothing_is_disconnected(server):
    with connect(server) as sock:
        sock.settimeout(6)
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 4


def test_a_client_dribbling_its_body_is_disconnected(server):
    with connect(server) as sock:
        sock.sendall(f"POST /v1/visit/signin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KIOSK_KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n".encode())
        assert seconds_until_closed(sock, b'{"phone": "13900000001"}') < 4


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def push(server, head: str, payload: memoryview, chunked: bool = False) -> None:
    """Send a request with a large body as fast as the server takes it, until it answers or hangs up."""
    with connect(server) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n")
            step = 1 * MB
            for offset in range(0, len(payload), step):
                piece = payload[offset:offset + step]
                if chunked:
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    sock.sendall(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            sock.recv(4096)
        except OSError:  # refused before the body was read: the server closed the connection
            pass


def test_big_bodies_from_anyone_do_not_grow_the_process(server):
    size = 90 * MB
    payload = memoryview(b"x" * size)

    def request(method, path, *headers, length=True):
        lines = [f"{method} {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *headers]
        lines.append(f"Content-Length: {size}" if length else "Transfer-Encoding: chunked")
        return "\r\n".join(lines) + "\r\n"

    kiosk = f"Authorization: Bearer {KIOSK_KEY}"
    admin = f"Authorization: Bearer {PROCESS_KEY}"
    jobs = [
        (request("POST", "/v1/subject"),),                                # nobody
        (request("POST", "/v1/subject"),),
        (request("POST", "/v1/subject", admin),),                         # a caller not allowed there
        (request("POST", "/v1/visit/signin", kiosk),),                    # allowed, but far too large
        (request("POST", "/v1/visit/qrcode", kiosk),),
        (request("POST", "/v1/visit/signin", kiosk, length=False), True),  # chunked: no declared length
        (request("PUT", "/v1/config/servers", admin, length=False), True),
        (request("POST", "/admin/login"),),                               # pages and the WeChat endpoint
        (request("POST", "/wechat?signature=x&timestamp=1&nonce=2"),),
    ]
    before = rss_kb(server.proc.pid, "VmRSS")
    threads = [threading.Thread(target=push, args=(server, job[0], payload, *job[1:])) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    peak = rss_kb(server.proc.pid, "VmHWM")
    print(f"RSS before {before // 1024} MB, peak {peak // 1024} MB")
    assert peak < 300 * 1024, f"peak RSS {peak // 1024} MB (from {before // 1024} MB)"
    assert peak - before < 50 * 1024, f"peak RSS {peak // 1024} MB (from {before // 1024} MB)"


def employee_session(env: dict, tmp_path) -> str:
    """The session cookie of an employee bound in the server's database (李经理, 13800000002)."""
    async def make() -> str:
        ctx = await build_context(Config(mongo_uri=env["MONGO_URI"], mongo_db=env["MONGO_DB"],
                                         redis_url=env["REDIS_URL"], secret_key=SECRET, data_dir=tmp_path / "ctx"))
        try:
            await ctx.services.storage.db.bindings.insert_one({
                "_id": "o-e", "type": "employee", "phone": "13800000002", "name": "李经理", "department": "市场部",
                "subject_id": 1, "avatar": "", "created_at": time.time()})
            sid = await ctx.services.wechat_sessions.create({"openid": "o-e"})
        finally:
            await ctx.close()
        return create_signed_value(derive_key(SECRET, "cookie-signing").hex(), "wx_session", sid).decode()
    return asyncio.run(make())


def test_applications_with_every_photo_at_once_keep_the_process_small(servers, tmp_path, databases):
    env = databases_env(databases)
    server = servers(DATA_DIR=str(tmp_path / "var"), **env).start()
    cookie = employee_session(env, tmp_path)
    photo = base64.b64encode(b"\xff\xd8\xff" + os.urandom(2 * MB - 3)).decode()
    now = int(time.time())
    body = json.dumps({
        "subject_type": 1, "name": "张三", "phone": "13900000001", "proposer": "13800000002", "interviewee": "李经理",
        "interviewee_phone": "13800000002", "start_time": now + 3600, "end_time": now + 7200, "photo": photo,
        "retinues": [{"name": f"随行{i}", "phone": f"137000000{i:02d}", "photo": photo} for i in range(MAX_RETINUES)],
    }, ensure_ascii=False).encode()
    head = (f"POST /v1/subject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Cookie: wx_session={cookie}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answers = []

    def apply():
        with connect(server) as sock:
            sock.settimeout(120)
            sock.sendall(head + body)
            answer = b""
            while not answer.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            answers.append(json.loads(answer.partition(b"\r\n\r\n")[2])["code"])

    before = rss_kb(server.proc.pid, "VmRSS")
    threads = [threading.Thread(target=apply) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    peak = rss_kb(server.proc.pid, "VmHWM")
    print(f"3 x {len(body) // MB} MB applications: RSS before {before // 1024} MB, peak {peak // 1024} MB")
    assert answers == [0, 0, 0]
    assert peak < 300 * 1024, f"peak RSS {peak // 1024} MB (from {before // 1024} MB)"


def test_a_client_that_sends_its_whole_body_first_still_reads_the_refusal(server):
    # Tornado's client, like many, reads the answer only after sending the body: the server answers
    # on the headers and drops the rest, instead of resetting the connection under it.
    client = HTTPClient()
    big = b"x" * (10 * MB)
    try:
        for _ in range(5):
            resp = client.fetch(server.url + "/v1/subject", method="POST", body=big, raise_error=False,
                                headers={"Content-Type": "application/json"})
            assert (resp.code, json.loads(resp.body)["code"]) == (401, 401)
            resp = client.fetch(server.url + "/v1/visit/signin", method="POST", body=big, raise_error=False,
                                headers={"Content-Type": "application/json", "Authorization": f"Bearer {KIOSK_KEY}"})
            assert (resp.code, json.loads(resp.body)["code"]) == (413, 413)
    finally:
        client.close()
