"""The gates' hot path (admin API 4.2, `POST /v1/visit/qrcode`) below Tornado's RequestHandler.

Gates scan all day, and for a scan whose facts this process already holds (the near cache), making
a RequestHandler — its headers, output transforms, flush and finish — costs more than the
decision itself. So the application answers a gate's ordinary scan straight from the HTTP
connection: a POST to exactly that path, with a Bearer key, whose JSON body GateHandler's own
schema accepts and whose key may call it. The decision and the gate log are GateHandler's
(`visits.decide_and_log` / `visits.log_decision`), the answer is `base.envelope` with the same
headers. Everything else, every error included, is replayed to the normal routing as it arrived,
so GateHandler answers it exactly as before. Only a body of a declared length within GateHandler's
limit is read here before the key is known; any other goes to the normal routing on its headers.

When the near cache holds the key and the token, the answer is written before `finish()` returns,
without a task or a trip through the event loop; otherwise a task reads them from Redis (one round
trip) or MongoDB first."""
from __future__ import annotations

import asyncio
import json
import time

import tornado.web
from tornado import httputil, iostream

from wxapp import gate

from . import visits
from .base import DEFAULT_HEADERS, ENVELOPE_HEADERS, HSTS_HEADER, envelope, log_access

PATH = "/v1/visit/qrcode"
SPEC = visits.GateHandler.post.api_spec
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")  # GateHandler reads these as forms
_BODIES = {code: envelope(code, message).encode() for code, message in gate.MESSAGES.items()}
_OK = httputil.ResponseStartLine("", 200, httputil.responses[200])


class Application(tornado.web.Application):
    """The Tornado application, with gate scans taken off the RequestHandler path."""

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)

    def route(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """The normal routing to the handlers."""
        return super().start_request(server_conn, request_conn)


def _small(length: str | None) -> bool:
    """Whether a body declares a length GateHandler accepts: only such a body is read before the key
    is checked; any other (too large, chunked, malformed) is GateHandler's to refuse on the headers."""
    return length is not None and length.isdigit() and int(length) <= SPEC.max_body


class _Date:
    """The Date header, formatted once a second."""

    second, text = -1, ""

    @classmethod
    def now(cls, now: float) -> str:
        if int(now) != cls.second:
            cls.second, cls.text = int(now), httputil.format_timestamp(now)
        return cls.text


class _Dispatch(httputil.HTTPMessageDelegate):
    """One request: a gate scan answered here, or anything else passed on to the normal routing."""

    def __init__(self, app: Application, server_conn: object, request_conn: httputil.HTTPConnection):
        self.app, self.server_conn, self.conn = app, server_conn, request_conn
        self.delegate: httputil.HTTPMessageDelegate | None = None  # the normal routing, once used
        self.task: asyncio.Task | None = None

    def headers_received(self, start_line, headers):
        if (start_line.method == "POST" and start_line.path == PATH
                and headers.get("Authorization", "")[:7].lower() == "bearer "
                and not headers.get("Content-Type", "").startswith(_FORMS)
                and _small(headers.get("Content-Length"))):
            self.start_line, self.headers, self.chunks = start_line, headers, []
            self.started = time.time()
            # As HTTPServerRequest reads them now (with the X-Real-Ip / X-Scheme of a proxy applied),
            # for the access log and for a replay after they were reset.
            context = getattr(self.conn, "context", None)
            self.remote_ip, self.protocol = getattr(context, "remote_ip", None), getattr(context, "protocol", "http")
            return None
        self.delegate = self.app.route(self.server_conn, self.conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        if self.delegate is not None:
            return self.delegate.data_received(chunk)
        self.chunks.append(chunk)
        return None

    def on_connection_close(self):
        if self.delegate is not None:
            self.delegate.on_connection_close()

    def finish(self):
        if self.delegate is not None:
            self.delegate.finish()
            return
        scan = self._read()
        if scan is None:
            self._replay()
            return
        key, body, parsed = scan
        also = [gate.cache_key(parsed[0])] if parsed is not None else []
        ctx = self.app.settings["context"]
        known = ctx.api_keys.authenticate_now(key, also)
        if known is None or not ctx.revocations.fresh():
            self.task = asyncio.get_running_loop().create_task(self._answer_later(key, body, parsed, also))
            return
        principal, values = known
        if principal.role not in SPEC.allow:
            self._replay()
            return
        entry = ctx.revocations.check(parsed[0], gate.GateCache.decode(values[also[0]])) if also else None
        self._write(visits.log_decision(ctx, principal, body, parsed, entry))

    def _read(self) -> tuple[str, dict, tuple[str, int | None] | None] | None:
        """(API key, body, parsed QR code) of a well-formed scan, else None."""
        try:
            raw = json.loads(b"".join(self.chunks))
            if not isinstance(raw, dict):
                return None
            body = SPEC.body.load(raw)
        except Exception:  # malformed: GateHandler says what is wrong
            return None
        key = self.headers["Authorization"][7:].strip()
        if not key:
            return None
        return key, body, gate.parse_qrcode(raw.get("qrcode"))

    async def _answer_later(self, key: str, body: dict, parsed, also: list[str]) -> None:
        ctx = self.app.settings["context"]
        try:
            principal, values = await ctx.api_keys.authenticate(key, also)
            if principal is None or principal.role not in SPEC.allow:
                code = None
            else:
                code = await visits.decide_and_log(ctx, principal, body, parsed, values)
        except Exception:  # Redis or MongoDB unavailable (or worse): GateHandler tries again and answers
            code = None
        if code is None:
            self._replay()
        else:
            self._write(code)

    def _write(self, code: int) -> None:
        body = _BODIES[code]
        headers = httputil.HTTPHeaders()
        headers["Date"] = _Date.now(time.time())
        for name, value in DEFAULT_HEADERS.items():
            headers[name] = value
        if self.protocol == "https":
            headers[HSTS_HEADER[0]] = HSTS_HEADER[1]
        for name, value in ENVELOPE_HEADERS.items():
            headers[name] = value
        headers["Content-Length"] = str(len(body))
        if tornado.web.GZipContentEncoding in self.app.transforms:
            headers["Vary"] = "Accept-Encoding"  # as the transform says of every answer
        try:
            self.conn.write_headers(_OK, headers, body)
            self.conn.finish()
        except iostream.StreamClosedError:  # the gate hung up
            pass
        log_access(200, "POST", PATH, self.remote_ip, time.time() - self.started, quiet=True)

    def _replay(self) -> None:
        """Pass the request on to the normal routing, as it arrived."""
        self.delegate = self.app.route(self.server_conn, self.conn)
        context = getattr(self.conn, "context", None)
        if context is None:
            self._deliver()
            return
        saved = context.remote_ip, context.protocol
        context.remote_ip, context.protocol = self.remote_ip, self.protocol
        try:
            self._deliver()
        finally:
            context.remote_ip, context.protocol = saved

    def _deliver(self) -> None:
        admitted = self.delegate.headers_received(self.start_line, self.headers)
        if admitted is None:
            self._send_body()
        else:  # the handler streams its body: it takes it once prepare() has admitted the request
            self.task = asyncio.ensure_future(self._send_body_after(admitted))

    async def _send_body_after(self, admitted) -> None:
        await admitted
        self._send_body()

    def _send_body(self) -> None:
        if self.chunks:
            self.delegate.data_received(b"".join(self.chunks))
        self.delegate.finish()
