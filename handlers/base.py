"""The HTTP layer's base: BaseHandler → APIHandler (the /v1 envelope) / PageHandler (HTML).

Who may call a handler is declared on it with `@api(allow=...)`; the envelope of every
/v1 answer, success or error, is written by `APIHandler.write_envelope` alone (and, for the scans
a gate's connection answers at once, by handlers.gatepath from the same `envelope` and
`answer_headers`).

Every handler streams its request body: `prepare()` runs on the headers alone, so a caller who is
not authenticated, or whose body is larger than the endpoint accepts (`@api(max_body=...)`, else
`max_body_size`), is answered before any of the body is read; what its client still sends is
dropped, and the connection closed."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
from typing import Any, Awaitable, Iterable

import redis.exceptions
import tornado.web
from tornado import httputil, iostream
from tornado.log import access_log

from wxapp.auth import WECHAT_ROLES, Principal, Role
from wxapp.context import Services
from wxapp.errors import DEFAULT_MESSAGES, ApiError
from wxapp.privacy import loggable_uri, mask_mobiles
from wxapp.storage import UNAVAILABLE_ERRORS
from wxapp.validation import PAGE, Schema

log = logging.getLogger("visitor.http")

WECHAT_COOKIE = "wx_session"
ADMIN_COOKIE = "admin_session"

# The database or Redis cannot be reached: answered with 503, never 500.
SERVICE_UNAVAILABLE = UNAVAILABLE_ERRORS + (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_NO_DATA = object()
# Scripts and styles only from our own static files (no inline code, no inline event handlers);
# images also from WeChat's head-image hosts; no framing, no plugins, forms post only to us.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'",
    "img-src 'self' data: https://*.qlogo.cn http://*.qlogo.cn", "connect-src 'self'", "object-src 'none'",
    "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
])
# Sent with every answer, by BaseHandler, the static files and handlers.gatepath (`answer_headers`).
DEFAULT_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
}
# Added to those when the request came over https (as the proxy in front says).
HSTS_HEADER = ("Strict-Transport-Security", "max-age=31536000")
PAGE_QUERY = Schema(PAGE)
# Configuration flags that the OpenAPI document depends on (see Field.required_when).
SMS_CODES = "sms_codes"
# The headers of every /v1 answer besides those.
ENVELOPE_HEADERS = {"Content-Type": "application/json; charset=UTF-8", "Cache-Control": "no-store"}
# The largest body an endpoint accepts unless it declares more: JSON or a form without photos.
DEFAULT_BODY_LIMIT = 256 * 1024
# Bodies larger than DEFAULT_BODY_LIMIT (photos) held at once by the process, in bytes. Reading and
# parsing one takes about twice its size at any moment (chunks and their join, then the bytes and
# their text, then the text and the parsed values), so big bodies add ~130 MB at most to the
# process, whoever sends them (three 56 MB applications at once: 66 MB before, 245 MB at the peak).
LARGE_BODIES_IN_FLIGHT = 64 * 1024 * 1024
# A run of non-ASCII bytes of a UTF-8 text (always whole characters).
_NON_ASCII = re.compile(rb"[\x80-\xff]+")
# The methods whose handlers receive the body once it has been read in full.
_BODY_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def envelope(code: int, err_msg: str, data: Any = _NO_DATA, page: dict | None = None) -> str:
    """The JSON text of a /v1 answer (CONTRACT §2)."""
    body: dict[str, Any] = {"code": code, "err_msg": err_msg}
    if data is not _NO_DATA:
        body["data"] = data
    if page is not None:
        body["page"] = page
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def log_access(status: int, method: str, uri: str, remote_ip: str | None, seconds: float, quiet: bool) -> None:
    """One line of the access log: errors at WARNING or ERROR, successes at INFO (DEBUG if `quiet`).
    The URI is logged without secrets and with phones masked."""
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    else:
        level = logging.DEBUG if quiet else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, loggable_uri(uri), remote_ip,
                       1000.0 * seconds)


def answer_headers(protocol: str) -> dict[str, str]:
    """The headers of a /v1 answer besides Date and Content-Length, as `BaseHandler` and
    `APIHandler.write_envelope` set them (for the gates' scans on handlers.gatepath)."""
    headers = dict(DEFAULT_HEADERS)
    if protocol == "https":
        headers[HSTS_HEADER[0]] = HSTS_HEADER[1]
    headers.update(ENVELOPE_HEADERS)
    return headers


def set_security_headers(handler: tornado.web.RequestHandler) -> None:
    """The headers every answer carries, HSTS over https, and no server banner."""
    for name, value in DEFAULT_HEADERS.items():
        handler.set_header(name, value)
    if handler.request.protocol == "https":
        handler.set_header(*HSTS_HEADER)
    handler.clear_header("Server")


@tornado.web.stream_request_body
class StaticHandler(tornado.web.StaticFileHandler):
    """The static files (CSS, JS, images), with the same security headers as every other answer.
    They take no body, so none is ever read."""

    def set_default_headers(self):
        set_security_headers(self)

    def prepare(self):
        if self.request.method not in ("GET", "HEAD"):
            raise tornado.web.HTTPError(405)
        if self.request.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.request.headers:
            raise tornado.web.HTTPError(413)

    def data_received(self, chunk: bytes) -> None:
        pass  # never called: prepare() refused any body


@dataclasses.dataclass(frozen=True)
class ApiSpec:
    """What an endpoint accepts and who may call it; read by the OpenAPI document too."""

    allow: tuple[Role, ...]
    summary: str
    query: Schema | None = None
    body: Schema | None = None
    path: Schema | None = None
    data: dict | None = None  # JSON Schema of `data` in a success answer
    paged: bool = False
    description: str = ""
    max_body: int = DEFAULT_BODY_LIMIT  # bytes of request body accepted
    errors: tuple[int, ...] = ()  # statuses the endpoint answers besides 400/401/403/429/503 (404, 409, …)
    envelope: bool = True  # False: `data` is the whole answer (the OpenAPI document itself)


def api(*, allow: Iterable[Role], summary: str, query: Schema | None = None, body: Schema | None = None,
        path: Schema | None = None, data: dict | None = None, paged: bool = False, description: str = "",
        max_body: int = DEFAULT_BODY_LIMIT, errors: Iterable[int] = (), envelope: bool = True):
    """Declare an endpoint: who may call it (checked on the headers, before the body is read, as is
    `max_body`), then parse path, query and body before the method runs.

    The method receives the parsed path parameters as keyword arguments; the parsed query and
    body are in `self.query` and `self.body`, the caller in `self.principal`."""
    spec = ApiSpec(tuple(allow), summary, query, body, path, data, paged, description, max_body, tuple(errors),
                   envelope)

    def decorate(method):
        # Not a coroutine itself: it returns what the method returns (a coroutine, or None from a
        # method that answered at once), so a method that need not wait costs no coroutine.
        @functools.wraps(method)
        def wrapper(self: "BaseHandler", *args, **kwargs):
            if spec.path is not None:
                kwargs = spec.path.load(kwargs, textual=True)
            if spec.query is not None:
                self.query = spec.query.load(self.query_arguments(), textual=True)
            if spec.body is not None:
                self.body = spec.body.load(self.json_body(), textual=self.body_is_form())
            return method(self, *args, **kwargs)

        wrapper.api_spec = spec
        return wrapper

    return decorate


class BodyBudget:
    """The bytes of large request bodies the process holds at once: a body that does not fit waits
    (before it is read) for others to finish, and is refused if none does in time. A body is always
    admitted when no other large one is held, so the largest an endpoint accepts can always come in."""

    def __init__(self, limit: int = LARGE_BODIES_IN_FLIGHT):
        self.limit = limit
        self.used = 0
        self._released = asyncio.Event()

    async def take(self, size: int, wait: float) -> bool:
        """Reserve `size` bytes, waiting up to `wait` seconds for room; False if there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.used and self.used + size > self.limit:
            released = self._released
            try:
                await asyncio.wait_for(released.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Return bytes reserved with take(), waking those who wait for room."""
        self.used -= size
        self._released.set()
        self._released = asyncio.Event()


# After answering a request refused on its headers, its connection stays open to take (and drop) a
# body the client sends anyway, until the client pauses this long or this much time has passed, so
# that the client reads the answer instead of a reset.
LINGER_SECONDS, LINGER_IDLE_SECONDS = 30.0, 1.0
_lingering: set[asyncio.Task] = set()


class _LingeringStream:
    """The stream of a request answered before its body was read, as its HTTP connection sees it:
    when the connection closes it, the stream is taken off the connection and closed only after
    what the client still sends has been read and dropped (a close with unread data resets the
    connection, and clients that send the whole body before reading would lose the answer)."""

    def __init__(self, connection, stream: iostream.IOStream):
        self._connection, self._stream = connection, stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def close(self, exc_info=False) -> None:
        self._connection.detach()  # HTTP processing of this connection ends here
        task = asyncio.ensure_future(self._drain_and_close())
        _lingering.add(task)
        task.add_done_callback(_lingering.discard)

    async def _drain_and_close(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        try:
            while loop.time() < deadline:
                await asyncio.wait_for(self._stream.read_bytes(64 * 1024, partial=True), LINGER_IDLE_SECONDS)
        except (iostream.StreamClosedError, asyncio.TimeoutError, OSError):
            pass
        finally:
            self._stream.close()


def _admits_first(prepare):
    """A subclass's prepare(), run after the admission of BaseHandler.prepare."""
    @functools.wraps(prepare)
    async def wrapper(self: "BaseHandler"):
        admitting = BaseHandler.prepare(self)
        if admitting is not None:
            await admitting
        if self._finished:
            return
        result = prepare(self)
        if result is not None:
            await result
    return wrapper


def _after_body(method):
    """A handler method, run once the body has been read in full and parsed."""
    @functools.wraps(method)
    def wrapper(self: "BaseHandler", *args, **kwargs):
        if self._finished:  # refused while the body arrived
            return None
        self.take_body()
        return method(self, *args, **kwargs)
    wrapper.after_body = True
    return wrapper


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Shared by every handler: the context, who is calling, the security checks, and the body:
    streamed, so that `prepare()` decides on the headers alone whether it is read at all."""

    principal: Principal | None = None
    # The body accepted by a handler whose method has no @api declaration (pages, forms, WeChat).
    max_body_size = DEFAULT_BODY_LIMIT
    _admitted = False
    _xsrf_pending = False
    _body_limit = DEFAULT_BODY_LIMIT
    _body_size = 0
    _chunks: list[bytes] | None = None
    _reserved = 0  # bytes of the BodyBudget this request holds
    _gone = False  # the connection closed
    _body_started = False  # some of the body has been received

    @property
    def ctx(self) -> Services:
        """The services (and through them the configuration, clock and clients)."""
        return self.settings["context"]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Whatever a subclass does in prepare() or its methods, the admission comes first and the
        # body is complete before a method runs: one path for every handler.
        own = cls.__dict__.get("prepare")
        if own is not None:
            cls.prepare = _admits_first(own)
        for name in _BODY_METHODS:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "after_body", False):
                setattr(cls, name, _after_body(method))

    def query_arguments(self) -> dict[str, str]:
        """The query string as a flat dict (the last value of a repeated name wins), exactly as sent:
        unlike get_query_argument, nothing stripped and no control character turned into a space."""
        return self.raw_arguments(self.request.query_arguments)

    def raw_arguments(self, arguments: dict[str, list[bytes]]) -> dict[str, str]:
        """Decoded query or form arguments, the last value of each name; 400 when not UTF-8."""
        return {name: self.decode_argument(values[-1], name=name) for name, values in arguments.items()}

    def parse_query(self, schema: Schema) -> dict:
        """The query string checked by `schema`, as @api checks /v1's; a 400 ApiError when malformed."""
        return schema.load(self.query_arguments(), textual=True)

    def set_default_headers(self):
        set_security_headers(self)
        # Pages and answers show phones, names and QR passes: no cache may keep them.
        self.set_header("Cache-Control", "no-store")

    def set_cookie(self, name, value, *args, **kwargs):
        """Every cookie (sessions, the XSRF token, the login nonce) is Secure when the request came
        over https."""
        if self.request.protocol == "https":
            kwargs["secure"] = True
        super().set_cookie(name, value, *args, **kwargs)

    def api_spec(self) -> ApiSpec | None:
        """The @api declaration of the method this request calls, if it has one."""
        method = getattr(type(self), self.request.method.lower(), None)
        return getattr(method, "api_spec", None)

    def prepare(self) -> Awaitable[None] | None:
        """Admit the request on its headers: the caller of an @api endpoint is authorized, and a
        declared body larger than the endpoint accepts is refused (413), before a byte of it is read.
        Nothing is awaited when the caller's API key is in this process's near cache and the body is
        small (a gate's scan): then it returns None, else what remains to be awaited."""
        if self._admitted:
            return None
        self._admitted = True
        spec = self.api_spec()
        if spec is not None:
            self.principal = held_principal(self.ctx, self.request.headers, spec.allow)
            if self.principal is None:
                return self._authorize_and_admit(spec)
        return self._admit_body(spec)

    async def _authorize_and_admit(self, spec: ApiSpec) -> None:
        self.principal = await self.authorize(spec.allow)
        reserving = self._admit_body(spec)
        if reserving is not None:
            await reserving

    def _admit_body(self, spec: ApiSpec | None) -> Awaitable[None] | None:
        """Refuse a body larger than the endpoint accepts; a large one waits for room in the BodyBudget
        (returned to be awaited)."""
        self._body_limit = spec.max_body if spec is not None else self.max_body_size
        length = self.request.headers.get("Content-Length")
        if length is None:
            # A body without a declared length cannot be reserved for: it may only be small.
            self._body_limit = min(self._body_limit, DEFAULT_BODY_LIMIT)
        else:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "Content-Length 请求头无效") from None
            if declared > self._body_limit:
                raise self.too_large()
            if declared > DEFAULT_BODY_LIMIT:
                return self._reserve(declared)
        self._chunks = []
        return None

    async def _reserve(self, declared: int) -> None:
        if not await self.settings["body_budget"].take(declared, self.ctx.config.request_timeout):
            raise ApiError(503, "服务器繁忙，请稍后再试")
        self._reserved = declared
        if self._gone:  # the caller hung up while waiting
            self._release_body()
        self._chunks = []

    def too_large(self) -> ApiError:
        """The error of a body larger than this endpoint accepts."""
        limit = self._body_limit
        size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
        return ApiError(413, f"请求体过大，此接口最多接受 {size}", status=413)

    def data_received(self, chunk: bytes) -> None:
        self._body_started = True
        if self._chunks is None or self._finished:
            return
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:  # a chunked body, which declared no length
            self._chunks = None
            error = self.too_large()
            self.send_error(413, exc_info=(ApiError, error, None))
            return
        self._chunks.append(chunk)

    def take_body(self) -> None:
        """Make the streamed body `request.body` (and its form arguments), as Tornado does for a
        handler that does not stream; then run the XSRF check that needed the form's `_xsrf`."""
        if self._chunks is not None:
            chunks, self._chunks = self._chunks, None
            body = self.request.body = b"".join(chunks)
            chunks.clear()
            if body:
                request = self.request
                try:
                    httputil.parse_body_arguments(request.headers.get("Content-Type", ""), body,
                                                  request.body_arguments, request.files, request.headers)
                except httputil.HTTPInputError:
                    raise ApiError(400, "请求体格式错误") from None
                for name, values in request.body_arguments.items():
                    request.arguments.setdefault(name, []).extend(values)
        if self._xsrf_pending:
            self._xsrf_pending = False
            try:
                tornado.web.RequestHandler.check_xsrf_cookie(self)
            except tornado.web.HTTPError:
                raise ApiError(403, "XSRF 校验失败，请刷新页面后重试") from None

    def check_xsrf_cookie(self):
        # Tornado checks before prepare(); a form carries `_xsrf` in its body, read after it.
        self._xsrf_pending = True

    def on_connection_close(self):
        self._chunks = None
        self._gone = True
        self._release_body()
        super().on_connection_close()

    def on_finish(self):
        self._release_body()

    def finish(self, chunk=None):
        headers = self.request.headers
        if not self._finished and not self._body_started and not self._gone and (
                headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers):
            # Answered on the headers alone: the body is not read, but its client may be sending it.
            connection = self.request.connection
            stream = getattr(connection, "stream", None)
            if stream is not None and hasattr(connection, "detach"):
                connection.stream = _LingeringStream(connection, stream)
        return super().finish(chunk)

    def _release_body(self) -> None:
        if self._reserved:
            self.settings["body_budget"].give(self._reserved)
            self._reserved = 0

    async def authorize(self, allow: tuple[Role, ...]) -> Principal | None:
        """Find the caller among the accepted kinds; 401 when there is none, 403 when not allowed."""
        if Role.PUBLIC in allow:
            return None
        header = self.request.headers.get("Authorization")
        if header:
            principal = await self._key_principal(header)
            if principal.role not in allow:
                raise ApiError(403, "该 API 密钥的角色无权调用此接口")
            return principal
        if Role.ADMIN in allow:
            principal = await self._admin_principal()
            if principal is not None:
                if self.request.method not in ("GET", "HEAD", "OPTIONS"):
                    self._xsrf_pending = True  # checked once the body (a form's `_xsrf`) is read
                return principal
        wechat = await self._wechat_principal()
        if wechat is not None and Role.WECHAT in allow:
            return wechat
        if wechat is not None and (Role.VISITOR in allow or Role.EMPLOYEE in allow):
            binding = await self.ctx.bindings.get(wechat.openid)
            if binding is not None and Role(binding["type"]) in allow:
                return dataclasses.replace(wechat, role=Role(binding["type"]), binding=binding)
            if Role.EMPLOYEE not in allow:
                raise ApiError(403, "请先绑定访客手机号")
            if Role.VISITOR not in allow:
                raise ApiError(403, "请先绑定员工身份")
            raise ApiError(403, "请先绑定员工身份或访客手机号")
        if wechat is not None or (Role.ADMIN not in allow and await self._admin_principal()):
            raise ApiError(403, "当前登录身份无权调用此接口")
        raise ApiError(401, self.unauthenticated_message(allow))

    @staticmethod
    def unauthenticated_message(allow: tuple[Role, ...]) -> str:
        """What to tell a caller who did not authenticate."""
        if any(role in allow for role in WECHAT_ROLES):
            return "请先通过微信登录"
        if Role.ADMIN in allow and len(allow) == 1:
            return "请先登录管理后台或提供管理员 API 密钥"
        return "缺少 API 密钥（Authorization: Bearer <密钥>）"

    async def _key_principal(self, header: str) -> Principal:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "Authorization 请求头应为 Bearer <API 密钥>")
        principal, _ = await self.ctx.api_keys.authenticate(key.strip(), [])
        if principal is None:
            raise ApiError(401, "API 密钥无效或已停用")
        return principal

    def _session_id(self, cookie: str, ttl: int) -> str | None:
        value = self.get_signed_cookie(cookie, max_age_days=ttl / 86400 + 1)
        return value.decode() if value else None

    async def _admin_principal(self) -> Principal | None:
        sid = self._session_id(ADMIN_COOKIE, self.ctx.config.admin_session_ttl)
        data = await self.ctx.admin_sessions.get(sid) if sid else None
        return Principal(Role.ADMIN, "admin_session", username=data["username"]) if data else None

    async def _wechat_principal(self) -> Principal | None:
        sid = self._session_id(WECHAT_COOKIE, self.ctx.config.wechat_session_ttl)
        data = await self.ctx.wechat_sessions.get(sid) if sid else None
        return Principal(Role.WECHAT, "wechat_session", openid=data["openid"]) if data else None

    async def public_url(self, path: str) -> str:
        """An absolute URL of this system: under `cloud_url` when set, else the request's own host."""
        base = await self.ctx.system_settings.cloud_url() or f"{self.request.protocol}://{self.request.host}"
        return base + path

    def start_session_cookie(self, cookie: str, sid: str, ttl: int) -> None:
        """Set a signed, HttpOnly, SameSite=Lax session cookie (Secure over https)."""
        self.set_signed_cookie(cookie, sid, expires_days=ttl / 86400, httponly=True, samesite="Lax", path="/")

    def _request_summary(self) -> str:
        # Tornado's own warnings name the request by this; without secrets or phones, as the access log.
        return f"{self.request.method} {loggable_uri(self.request.uri)} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb):
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.code, mask_mobiles(value.message))
        elif isinstance(value, SERVICE_UNAVAILABLE):
            log.error("%s %s: database unavailable: %s", self.request.method, self.request.path, value)
        elif isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:  # Tornado would also log the whole request, its cookies and Authorization header included
            log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    @staticmethod
    def error_of(exc: BaseException | None, status: int) -> ApiError:
        """The ApiError to show for an exception (or for a bare status)."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, tornado.web.MissingArgumentError):
            return ApiError(400, f"缺少参数 {exc.arg_name}")
        if isinstance(exc, SERVICE_UNAVAILABLE):
            return ApiError(503)
        if isinstance(exc, tornado.web.HTTPError):
            status = exc.status_code
        elif exc is not None:
            status = 500
        if status in DEFAULT_MESSAGES:
            return ApiError(status, status=status)
        return ApiError(400 if status < 500 else 500, status=status)


def held_principal(ctx: Services, headers: httputil.HTTPHeaders, allow: tuple[Role, ...]) -> Principal | None:
    """The caller, when it presents an API key this process's near cache holds and whose role may
    call: as authorize() would answer, without waiting. None: authorize() decides."""
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    if Role.PUBLIC in allow or scheme.lower() != "bearer" or not key.strip():
        return None
    known = ctx.api_keys.authenticate_now(key.strip())
    if known is None or known[0].role not in allow:
        return None
    return known[0]


def is_form(headers: httputil.HTTPHeaders) -> bool:
    """Whether a body is a form (its values are strings) rather than JSON."""
    return headers.get("Content-Type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def not_json(name: str):
    """NaN and Infinity are not JSON, though Python's parser takes them (`parse_constant`)."""
    raise ValueError(name)


class APIHandler(BaseHandler):
    """A /v1 JSON endpoint: answers the envelope of CONTRACT §2, never a redirect or HTML."""

    query: dict
    body: dict

    def check_xsrf_cookie(self):
        # API callers use keys or WeChat sessions; authorize() asks XSRF of admin browser sessions.
        pass

    def json_body(self) -> dict[str, Any]:
        """The request body as a dict: a JSON object or a urlencoded form; 400 when malformed."""
        if not hasattr(self, "_json_body"):
            self._json_body = self._parse_body()
        return self._json_body

    def body_is_form(self) -> bool:
        """Whether the body is a form (its values are strings) rather than JSON."""
        return is_form(self.request.headers)

    def _parse_body(self) -> dict[str, Any]:
        if self.body_is_form():
            return self.raw_arguments(self.request.body_arguments)
        raw = self.request.body
        if not raw or raw.isspace():
            return {}
        # Python keeps a text with any Chinese character at two bytes a character: as JSON escapes,
        # the names keep a body of base64 photos at one. And the text replaces the bytes, so a body
        # with photos is held at most twice while it is parsed (see LARGE_BODIES_IN_FLIGHT).
        try:
            escaped = _NON_ASCII.sub(lambda run: json.dumps(run.group().decode("utf-8"))[1:-1].encode(),
                                     raw.removeprefix(b"\xef\xbb\xbf"))
        except UnicodeDecodeError:
            raise ApiError(400, "请求体不是合法的 JSON") from None
        self.request.body = raw = b""
        text = escaped.decode("ascii")
        del escaped
        try:
            body = json.loads(text, parse_constant=not_json)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise ApiError(400, "请求体不是合法的 JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "请求体应为 JSON 对象")
        return body

    def ok(self, data: Any = _NO_DATA, page: dict | None = None) -> None:
        """Answer success (code 0)."""
        self.write_envelope(0, "", data, page)

    def write_envelope(self, code: int, err_msg: str, data: Any = _NO_DATA, page: dict | None = None,
                       status: int = 200) -> None:
        """The one place a /v1 answer is written (handlers.gatepath writes the same for held scans)."""
        self.set_status(status)
        for name, value in ENVELOPE_HEADERS.items():
            self.set_header(name, value)
        self.finish(envelope(code, err_msg, data, page))

    def write_error(self, status_code: int, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = self.error_of(exc, status_code)
        self.clear()
        self.set_default_headers()
        if error.status == 405:
            self.set_header("Allow", ", ".join(m for m in self.SUPPORTED_METHODS if self._implements(m)))
        self.write_envelope(error.code, error.message, status=error.status)

    def _implements(self, method: str) -> bool:
        own = getattr(type(self), method.lower(), None)
        return own is not None and own is not getattr(tornado.web.RequestHandler, method.lower(), None)


class UnknownApiHandler(APIHandler):
    """Any path under /v1 that no endpoint serves."""

    def prepare(self):
        raise ApiError(404, "接口不存在")


class PlainTextHandler(BaseHandler):
    """For machines and images: errors are a status and a short plain-text message."""

    def write_error(self, status_code: int, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = self.error_of(exc, status_code)
        self.clear()
        self.set_status(error.status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(error.message)


class PageHandler(BaseHandler):
    """An HTML page rendered with Jinja2; errors are shown as a Chinese error page."""

    def page_number(self) -> int:
        """The `page` query argument, checked as /v1 checks it; the first page when it is malformed."""
        try:
            return self.parse_query(PAGE_QUERY)["page"]
        except ApiError:
            return 1

    def render_page(self, template: str, status: int = 200, **values) -> None:
        """Render a template from templates/ with the request's helpers."""
        env = self.settings["jinja_env"]
        html = env.get_template(template).render(
            xsrf_form_html=self.xsrf_form_html, static_url=self.static_url, request=self.request, **values
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = self.error_of(exc, status_code)
        self.clear()
        self.set_default_headers()
        status = error.status if error.status >= 400 else 400
        self.render_page("error.html", status=status, message=error.message, code=status)


class NotFoundPageHandler(PageHandler):
    """Any other path: a friendly 404 page."""

    def prepare(self):
        raise ApiError(404, "页面不存在")
