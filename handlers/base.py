"""The HTTP layer's base: BaseHandler → APIHandler (the /v1 envelope) / PageHandler (HTML).

Who may call a handler is declared on it with `@api(allow=...)`; the envelope of every
/v1 answer, success or error, is written by `APIHandler.write_envelope` alone (and, for the gate's
successes, by the fast path in handlers.gatepath, from the same `envelope`)."""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Iterable

import redis.exceptions
import tornado.web
from tornado.log import access_log

from wxapp.auth import WECHAT_ROLES, Principal, Role
from wxapp.context import AppContext
from wxapp.errors import DEFAULT_MESSAGES, ApiError
from wxapp.storage import UNAVAILABLE_ERRORS
from wxapp.validation import PAGE, Schema

log = logging.getLogger("visitor.http")

WECHAT_COOKIE = "wx_session"
ADMIN_COOKIE = "admin_session"

# The database or Redis cannot be reached: answered with 503, never 500.
SERVICE_UNAVAILABLE = UNAVAILABLE_ERRORS + (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_NO_DATA = object()
PAGE_QUERY = Schema(PAGE)
# Configuration flags that the OpenAPI document depends on (see Field.required_when).
SMS_CODES = "sms_codes"
# Sent with every answer, by BaseHandler and by the gate's fast path (handlers.gatepath).
DEFAULT_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
# The headers of every /v1 answer besides those.
ENVELOPE_HEADERS = {"Content-Type": "application/json; charset=UTF-8", "Cache-Control": "no-store"}


def envelope(code: int, err_msg: str, data: Any = _NO_DATA, page: dict | None = None) -> str:
    """The JSON text of a /v1 answer (CONTRACT §2)."""
    body: dict[str, Any] = {"code": code, "err_msg": err_msg}
    if data is not _NO_DATA:
        body["data"] = data
    if page is not None:
        body["page"] = page
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def log_access(status: int, method: str, uri: str, remote_ip: str | None, seconds: float, quiet: bool) -> None:
    """One line of the access log: errors at WARNING or ERROR, successes at INFO (DEBUG if `quiet`)."""
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    else:
        level = logging.DEBUG if quiet else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, uri, remote_ip, 1000.0 * seconds)


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
    errors: tuple[int, ...] = ()  # statuses the endpoint answers besides 400/401/403/429/503 (404, 409, …)
    envelope: bool = True  # False: `data` is the whole answer (the OpenAPI document itself)


def api(*, allow: Iterable[Role], summary: str, query: Schema | None = None, body: Schema | None = None,
        path: Schema | None = None, data: dict | None = None, paged: bool = False, description: str = "",
        errors: Iterable[int] = (), envelope: bool = True):
    """Declare an endpoint: authorize the caller, then parse path, query and body before the method runs.

    The method receives the parsed path parameters as keyword arguments; the parsed query and
    body are in `self.query` and `self.body`, the caller in `self.principal`."""
    spec = ApiSpec(tuple(allow), summary, query, body, path, data, paged, description, tuple(errors), envelope)

    def decorate(method):
        @functools.wraps(method)
        async def wrapper(self: "BaseHandler", *args, **kwargs):
            self.principal = await self.authorize(spec.allow)
            if spec.path is not None:
                kwargs = spec.path.load(kwargs, textual=True)
            if spec.query is not None:
                self.query = spec.query.load(self.query_arguments(), textual=True)
            if spec.body is not None:
                self.body = spec.body.load(self.json_body(), textual=self.body_is_form())
            return await method(self, *args, **kwargs)

        wrapper.api_spec = spec
        return wrapper

    return decorate


class BaseHandler(tornado.web.RequestHandler):
    """Shared by every handler: the context, who is calling, and the security checks."""

    principal: Principal | None = None
    # Redis keys a handler wants read together with the API key (one round trip), and their values.
    prefetch_keys: list[str] = []
    prefetched: dict[str, str | None] = {}

    @property
    def ctx(self) -> AppContext:
        """The application context (clients and services)."""
        return self.settings["context"]

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
        for name, value in DEFAULT_HEADERS.items():
            self.set_header(name, value)

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
                    self._verify_xsrf()
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
        principal, self.prefetched = await self.ctx.api_keys.authenticate(key.strip(), self.prefetch_keys)
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

    def _verify_xsrf(self) -> None:
        try:
            tornado.web.RequestHandler.check_xsrf_cookie(self)
        except tornado.web.HTTPError:
            raise ApiError(403, "XSRF 校验失败，请刷新页面后重试") from None

    async def public_url(self, path: str) -> str:
        """An absolute URL of this system: under `cloud_url` when set, else the request's own host."""
        base = await self.ctx.system_settings.cloud_url() or f"{self.request.protocol}://{self.request.host}"
        return base + path

    def start_session_cookie(self, cookie: str, sid: str, ttl: int) -> None:
        """Set a signed, HttpOnly, SameSite=Lax session cookie."""
        self.set_signed_cookie(
            cookie, sid, expires_days=ttl / 86400, httponly=True, samesite="Lax",
            secure=self.request.protocol == "https", path="/",
        )

    def log_exception(self, typ, value, tb):
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.code, value.message)
        elif isinstance(value, SERVICE_UNAVAILABLE):
            log.error("%s %s: database unavailable: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)

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


def _not_json(name: str):
    """NaN and Infinity are not JSON, though Python's parser takes them."""
    raise ValueError(name)


class APIHandler(BaseHandler):
    """A /v1 JSON endpoint: answers the envelope of CONTRACT §2, never a redirect or HTML."""

    query: dict
    body: dict

    def check_xsrf_cookie(self):
        # API callers use keys or WeChat sessions; authorize() checks XSRF for admin browser sessions.
        pass

    def json_body(self) -> dict[str, Any]:
        """The request body as a dict: a JSON object or a urlencoded form; 400 when malformed."""
        if not hasattr(self, "_json_body"):
            self._json_body = self._parse_body()
        return self._json_body

    def body_is_form(self) -> bool:
        """Whether the body is a form (its values are strings) rather than JSON."""
        return self.request.headers.get("Content-Type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data"))

    def _parse_body(self) -> dict[str, Any]:
        if self.body_is_form():
            return self.raw_arguments(self.request.body_arguments)
        if not self.request.body.strip():
            return {}
        try:
            body = json.loads(self.request.body, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise ApiError(400, "请求体不是合法的 JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "请求体应为 JSON 对象")
        return body

    def ok(self, data: Any = _NO_DATA, page: dict | None = None) -> None:
        """Answer success (code 0)."""
        self.write_envelope(0, "", data, page)

    def write_envelope(self, code: int, err_msg: str, data: Any = _NO_DATA, page: dict | None = None,
                       status: int = 200) -> None:
        """The one place a /v1 answer is written (the gate's fast path writes the same)."""
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
