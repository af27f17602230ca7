"""The gates' ordinary scans, answered from the HTTP connection below RequestHandler.

A RequestHandler's machinery (routing, streaming admission, headers, transforms, finish) costs about
as much CPU as the gate's decision itself. So a POST to /v1/visit/qrcode whose Bearer key this
process holds (near cache) and may scan, with a JSON body of a declared length within the
endpoint's limit, is read here and given to `Gate.scan_now`, GateHandler's own service; when that
answers at once (the token is held too), the answer is written with `base.answer_headers`, the
headers of every /v1 answer. Anything else - another request, a scan that must wait for Redis or
MongoDB, a malformed body, any exception - is passed, as it arrived and before anything was
awaited, to the normal routing and GateHandler, which answer as for every other request."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import tornado.web
from tornado import httputil, iostream

from wxapp.gate import MESSAGES, SCAN, SCAN_MAX_BODY

from .base import answer_headers, envelope, held_principal, is_form, log_access, not_json
from .visits import GateHandler

log = logging.getLogger("visitor.http")

PATH = "/v1/visit/qrcode"
_OK = httputil.ResponseStartLine("", 200, httputil.responses[200])


class Application(tornado.web.Application):
    """The Tornado application, with the gates' ordinary scans taken off the RequestHandler path."""

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Scan(self, server_conn, request_conn)

    def route(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        """The normal routing to the handlers."""
        return super().start_request(server_conn, request_conn)


class _Scan(httputil.HTTPMessageDelegate):
    """One request: an ordinary scan answered here, or anything else passed on to the normal routing."""

    def __init__(self, app: Application, server_conn: object, conn: httputil.HTTPConnection):
        self.app, self.server_conn, self.conn = app, server_conn, conn
        self.delegate: httputil.HTTPMessageDelegate | None = None  # the normal routing, once used

    def headers_received(self, start_line, headers):
        length, principal = headers.get("Content-Length", ""), None
        if (start_line.method == "POST" and start_line.path == PATH and not is_form(headers)
                and length.isdigit() and int(length) <= SCAN_MAX_BODY):
            principal = held_principal(self.app.settings["context"], headers, GateHandler.post.api_spec.allow)
        if principal is None:
            return self._route(start_line, headers)
        self.principal, self.start_line, self.chunks = principal, start_line, []
        # Tornado's own request: the client's address and protocol as the server sees them now.
        self.request = httputil.HTTPServerRequest(connection=self.conn, server_connection=self.server_conn,
                                                  start_line=start_line, headers=headers)
        return None

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
        try:
            body = json.loads(b"".join(self.chunks), parse_constant=not_json)
            code = self.app.settings["context"].gate.scan_now(self.principal, SCAN.load(body))
        except Exception:  # malformed (GateHandler says what is wrong), or worse (it answers 500)
            code = None
        if code is None:
            self._pass_on()
        else:
            self._answer(code)

    def _answer(self, code: int) -> None:
        body = envelope(code, MESSAGES[code]).encode()
        headers = httputil.HTTPHeaders(answer_headers(self.request.protocol))
        headers["Date"] = httputil.format_timestamp(time.time())
        headers["Content-Length"] = str(len(body))
        if tornado.web.GZipContentEncoding in self.app.transforms:
            headers["Vary"] = "Accept-Encoding"  # as the transform says of every answer
        try:
            self.conn.write_headers(_OK, headers, body)
            self.conn.finish()
        except iostream.StreamClosedError:  # the gate hung up
            pass
        except Exception:  # nothing else is expected here; the connection's state is unknown
            log.exception("answering a scan failed")
            self.conn.close()
            return
        log_access(200, "POST", PATH, self.request.remote_ip, self.request.request_time(), quiet=True)

    def _route(self, start_line, headers):
        self.delegate = self.app.route(self.server_conn, self.conn)
        return self.delegate.headers_received(start_line, headers)

    def _pass_on(self) -> None:
        """Give the request to GateHandler as it arrived; it streams its body, so the body follows once
        GateHandler has admitted the request on its headers."""
        try:
            admitted = self._route(self.start_line, self.request.headers)
        except Exception:  # Tornado's routing answers errors itself: never expected
            log.exception("passing a scan on failed")
            self.conn.close()
            return
        self.task = asyncio.ensure_future(self._deliver(admitted))

    async def _deliver(self, admitted) -> None:
        try:
            if admitted is not None:
                await admitted
            if self.chunks:
                self.delegate.data_received(b"".join(self.chunks))
            self.delegate.finish()
        except Exception:  # as above
            log.exception("passing a scan on failed")
            self.conn.close()
