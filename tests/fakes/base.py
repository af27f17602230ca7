"""Shared plumbing of the fake services: a Tornado server with request log and failure injection."""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import socket
import zlib

import tornado.gen
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


class FakeHandler(tornado.web.RequestHandler):
    """Records the request, applies the fake's delay and injected failures, answers JSON."""

    # False for pages a browser opens (WeChat's authorize page): failures target API calls only.
    injectable = True

    def initialize(self, fake: FakeServer):
        self.fake = fake

    async def prepare(self):
        self.entry = self.fake._record(self.request)
        if self.fake.delay:
            await tornado.gen.sleep(self.fake.delay)
        if self.injectable and self.fake._failures:
            status = self.fake._failures.pop(0)
            self.reply(self.fake.error_body(status, "injected failure"), status)

    def finish(self, chunk=None):
        """Answer, unless the fake is to drop this answer: then the work is done but the connection is
        closed without a reply, as when a network or a proxy loses the answer."""
        if self.injectable and self.fake._take_drop(self.request):
            self.entry["status"] = "dropped"
            self.fake.log.info("dropped the answer to %s %s", self.request.method, self.request.uri)
            self.detach().close()
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return super().finish(chunk)

    def check_xsrf_cookie(self):
        """The real services know nothing of Tornado's XSRF protection."""

    def json_body(self):
        """The request body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.request.body or b"null")
        except ValueError:
            return None

    def reply(self, body, status: int = 200) -> None:
        """Answer `body` as UTF-8 JSON with Chinese left readable, as the real services do."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body, ensure_ascii=False))

    def on_finish(self):
        entry = getattr(self, "entry", None)
        if entry is not None:
            entry["status"] = self.get_status()
            body = entry["json"] if entry["json"] is not None else (entry["form"] or entry["files"] or "")
            self.fake.log.info("%s %s %s %s", entry["status"], entry["method"], self.request.uri, body)

    def write_error(self, status_code, **kwargs):
        self.reply(self.fake.error_body(status_code, self._reason), status_code)


class NotFoundHandler(FakeHandler):
    """Any path the fake does not speak: recorded, then 404 in the service's own error shape."""

    injectable = False

    def not_found(self, *args):
        self.reply(self.fake.error_body(404, "not found"), 404)

    get = post = put = delete = patch = head = options = not_found


class FakeServer:
    """A local HTTP server standing in for a remote service; subclasses add the routes."""

    name = "fake"
    default_port = 9000

    def __init__(self):
        self.server: HTTPServer | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.log = logging.getLogger(f"tests.fakes.{self.name}")
        self.delay = 0.0
        self.requests: list[dict] = []
        self._failures: list[int] = []
        self._drops: list[tuple[str | None, str | None]] = []

    def routes(self) -> list:
        """(pattern, handler class) pairs; every handler gets `fake=self`."""
        raise NotImplementedError

    def error_body(self, status: int, message: str):
        """The body this service sends with an HTTP error (injected failures, unknown paths)."""
        return {"error": message, "status": status}

    def start(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Listen on host:port (0 = any free port) on the current IOLoop."""
        routes = [(pattern, handler, {"fake": self}) for pattern, handler in self.routes()]
        routes.append((r"/.*", NotFoundHandler, {"fake": self}))
        app = tornado.web.Application(routes, log_function=lambda handler: None)
        sockets = bind_sockets(port, host, family=socket.AF_INET)
        self.host, self.port = host, sockets[0].getsockname()[1]
        self.server = HTTPServer(app)
        self.server.add_sockets(sockets)

    @property
    def url(self) -> str:
        """The base URL, ending in a slash."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        """Stop listening; the IOLoop's teardown closes connections still open."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next `n` API calls answer HTTP `status`."""
        self._failures.extend([status] * n)

    def drop_answers(self, n: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        """The next `n` API calls (of `method` to `path`, when given) are carried out, but their
        answers are dropped: the connection closes without a reply."""
        self._drops.extend([(method, path)] * n)

    def _take_drop(self, request) -> bool:
        for i, (method, path) in enumerate(self._drops):
            if method in (None, request.method) and path in (None, request.path):
                del self._drops[i]
                return True
        return False

    def reset(self) -> None:
        """Forget recorded requests, injected failures, dropped answers and the delay (subclasses extend it)."""
        self.requests.clear()
        self._failures.clear()
        self._drops.clear()
        self.delay = 0.0

    def requests_to(self, path: str) -> list[dict]:
        """The recorded requests whose path equals `path`."""
        return [r for r in self.requests if r["path"] == path]

    def _record(self, request) -> dict:
        entry = {
            "method": request.method,
            "path": request.path,
            "query": {k: request.query_arguments[k][-1].decode("utf-8", "replace")
                      for k in request.query_arguments},
            "headers": dict(request.headers),
            "json": None,
            "form": {},
            "files": {},
            "status": None,  # filled in when the answer is sent
        }
        if "json" in request.headers.get("Content-Type", "") or request.body[:1] in (b"{", b"["):
            try:
                entry["json"] = json.loads(request.body)
            except ValueError:
                pass
        entry["form"] = {k: v[-1].decode("utf-8", "replace") for k, v in request.body_arguments.items()}
        entry["files"] = {k: [(f.filename, len(f.body)) for f in v] for k, v in request.files.items()}
        self.requests.append(entry)
        return entry


def make_jpeg(seed: str = "", size: int = 96) -> bytes:
    """A small valid JPEG of a colour derived from `seed` (a stand-in face photo)."""
    from PIL import Image

    h = zlib.crc32(seed.encode())
    img = Image.new("RGB", (size, size), (h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return out.getvalue()


def serve_forever(fake: FakeServer, argv=None) -> None:
    """Command-line entry point: serve `fake` on --host/--port until interrupted, logging requests."""
    parser = argparse.ArgumentParser(description=f"Local fake of {fake.name}")
    parser.add_argument("--port", type=int, default=fake.default_port)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main():
        fake.start(args.port, args.host)
        fake.log.info("serving on %s", fake.url)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
