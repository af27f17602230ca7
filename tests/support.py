"""Test helpers: a cookie-keeping HTTP client that drives the app like a browser or a kiosk."""
from __future__ import annotations

import datetime
import json as jsonlib
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urljoin, urlsplit
from zoneinfo import ZoneInfo

from tornado.httpclient import AsyncHTTPClient, HTTPResponse


class Response:
    """An HTTP response with its JSON body parsed on demand."""

    def __init__(self, resp: HTTPResponse):
        self.raw = resp
        self.status = resp.code
        self.headers = resp.headers
        self.body = resp.body or b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return jsonlib.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class Browser:
    """Keeps cookies per host, sends XSRF tokens like the admin pages do, follows redirects on request."""

    def __init__(self, http_client: AsyncHTTPClient, base_url: str, headers: dict | None = None,
                 public_url: str | None = None):
        self.client = http_client
        self.base_url = base_url
        # The public address (cloud_url) reaches this app, as a reverse proxy would arrange.
        self.public_url = public_url
        self.cookies: dict[str, SimpleCookie] = {}
        self.headers = dict(headers or {})

    def cookie(self, name: str, url: str | None = None) -> str | None:
        """The value of a cookie this browser holds for `url`'s host (default: the app)."""
        jar = self.cookies.get(urlsplit(url or self.base_url).netloc)
        return jar[name].value if jar and name in jar else None

    def set_cookie(self, name: str, value: str, url: str | None = None) -> None:
        """Set a cookie by hand (to forge or replay one)."""
        self.cookies.setdefault(urlsplit(url or self.base_url).netloc, SimpleCookie())[name] = value

    async def fetch(self, path: str, method: str = "GET", *, json=None, form=None, body=None,
                    headers: dict | None = None, key: str | None = None, xsrf: bool = True,
                    follow: bool = False, decompress: bool = True) -> Response:
        """Request `path` (relative to the app, or absolute); returns the final Response."""
        url = self._local(path if "://" in path else self.base_url + path)
        hdrs = dict(self.headers)
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False).encode()
            hdrs["Content-Type"] = "application/json"
        elif form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        if xsrf and method not in ("GET", "HEAD") and self.cookie("_xsrf", url):
            hdrs["X-XSRFToken"] = self.cookie("_xsrf", url)
        hdrs.update(headers or {})
        for _ in range(10):
            jar = self.cookies.get(urlsplit(url).netloc)
            if jar:
                hdrs["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in jar.items())
            if body is None and method in ("POST", "PUT", "PATCH"):
                body = b""
            resp = await self.client.fetch(url, method=method, body=body, headers=hdrs, raise_error=False,
                                           follow_redirects=False, allow_nonstandard_methods=True,
                                           decompress_response=decompress)
            self._store(url, resp)
            if not (follow and resp.code in (301, 302, 303, 307)):
                return Response(resp)
            url = self._local(urljoin(url, resp.headers["Location"]))
            method, body = "GET", None
            hdrs.pop("Content-Type", None)
            hdrs.pop("Cookie", None)
        raise AssertionError("too many redirects")

    def _local(self, url: str) -> str:
        if self.public_url and url.startswith(self.public_url + "/"):
            return self.base_url + url[len(self.public_url):]
        return url

    def _store(self, url: str, resp: HTTPResponse) -> None:
        jar = self.cookies.setdefault(urlsplit(url).netloc, SimpleCookie())
        for header in resp.headers.get_list("Set-Cookie"):
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["expires"] and "1970" in morsel["expires"] or morsel.value == "":
                    jar.pop(name, None)
                else:
                    jar[name] = morsel


def set_cookie_headers(resp: Response) -> dict[str, str]:
    """The raw Set-Cookie headers of a response, by cookie name."""
    result = {}
    for header in resp.headers.get_list("Set-Cookie"):
        result[header.split("=", 1)[0]] = header
    return result


class Clock:
    """The application's clock in tests: real time, moved forward or back on request."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def to_local_hour(self, hour: int, tz: str = "Asia/Shanghai") -> None:
        """Move to `hour`:00 of today in `tz` (a test whose visits must stay within one local day)."""
        now = datetime.datetime.fromtimestamp(self(), ZoneInfo(tz))
        self.advance(now.replace(hour=hour, minute=0, second=0, microsecond=0).timestamp() - now.timestamp())
