"""GET /v1/openapi.json: an OpenAPI 3.1 document built from the endpoints' own declarations."""
from __future__ import annotations

import re
from typing import Iterable

from wxapp.auth import Role

from .base import APIHandler, api

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_METHODS = ("get", "post", "put", "delete", "patch")

_ENVELOPE = {
    "type": "object",
    "required": ["code", "err_msg"],
    "properties": {
        "code": {"type": "integer", "description": "0 成功；非 0 见 err_msg"},
        "err_msg": {"type": "string"},
    },
}
_ERROR = {**_ENVELOPE, "description": "错误：code 与 HTTP 状态码相同，err_msg 为中文说明"}
_PAGE = {
    "type": "object",
    "properties": {
        "current": {"type": "integer", "description": "当前页码（从 1 开始）"},
        "size": {"type": "integer", "description": "每页条数"},
        "count": {"type": "integer", "description": "符合条件的记录总数"},
        "total": {"type": "integer", "description": "总页数"},
    },
}
# Who may call an endpoint, as the credentials that role presents: every WeChat role a session
# cookie, admins their session cookie or an admin key, kiosks and gates their key.
_SECURITY = {
    Role.WECHAT: ("wechatSession",),
    Role.VISITOR: ("wechatSession",),
    Role.EMPLOYEE: ("wechatSession",),
    Role.ADMIN: ("adminSession", "apiKey"),
    Role.KIOSK: ("apiKey",),
    Role.GATE: ("apiKey",),
}
# What each error status means, for the operations' `responses`.
_ERRORS = {
    400: "参数缺失、类型或取值不符（err_msg 指出参数）",
    401: "未认证：没有或无效的会话、API 密钥",
    403: "已认证但无权调用，或操作的不是本人的数据",
    404: "资源不存在",
    409: "与当前状态冲突",
    429: "请求过于频繁",
    502: "考拉、微信或短信服务失败，未做任何修改",
    503: "MongoDB 或 Redis 不可用",
}


def openapi_path(pattern: str) -> str:
    """A route regex such as `/v1/visit/records/(?P<id>[0-9]+)` as `/v1/visit/records/{id}`."""
    return _GROUP.sub(r"{\1}", pattern).rstrip("$")


def security_of(allow) -> list[dict]:
    """The OpenAPI `security` of an endpoint open to the roles `allow` (`[]`: anyone)."""
    if Role.PUBLIC in allow:
        return []
    schemes: list[str] = []
    for role in allow:
        schemes += [name for name in _SECURITY[role] if name not in schemes]
    return [{name: []} for name in schemes]


def _error(status: int) -> dict:
    return {"description": _ERRORS[status], "content": {"application/json": {"schema": _ERROR}}}


def _operation(spec, flags: frozenset[str]) -> dict:
    op: dict = {"summary": spec.summary, "x-roles": [role.value for role in spec.allow]}
    if spec.description:
        op["description"] = spec.description
    op["security"] = security_of(spec.allow)
    params = []
    if spec.path is not None:
        params += spec.path.parameters("path", flags)
    if spec.query is not None:
        params += spec.query.parameters("query", flags)
    if params:
        op["parameters"] = params
    if spec.body is not None:
        content = {"application/json": {"schema": spec.body.json_schema(flags)}}
        if all(field.kind not in ("array", "object") for field in spec.body.fields):
            # A form carries strings only: documented where every field can be written as one.
            content["application/x-www-form-urlencoded"] = {"schema": spec.body.json_schema(flags)}
        op["requestBody"] = {"required": True, "content": content}
    if not spec.envelope:
        op["responses"] = {"200": {"description": spec.summary, "content": {"application/json": {"schema": spec.data}}}}
        return op
    success = {**_ENVELOPE, "properties": dict(_ENVELOPE["properties"])}
    if spec.data is not None:
        success["properties"]["data"] = spec.data
    if spec.paged:
        success["properties"]["page"] = _PAGE
    statuses = set(spec.errors)
    if spec.path or spec.query or spec.body:
        statuses.add(400)
    if Role.PUBLIC not in spec.allow:  # 429: callers are rate limited wherever they authenticate
        statuses |= {401, 403, 429, 503}
    op["responses"] = {
        "200": {"description": "code 0 为成功", "content": {"application/json": {"schema": success}}},
        **{str(status): _error(status) for status in sorted(statuses)},
    }
    return op


def build_openapi(routes, flags: Iterable[str] = ()) -> dict:
    """The document for every /v1 route that declares its methods with @api, for a configuration
    with the given flags set (base.SMS_CODES: bindings need an SMS code)."""
    flags = frozenset(flags)
    paths: dict = {}
    for pattern, handler in routes:
        if not pattern.startswith("/v1/"):
            continue
        operations = {}
        for method in _METHODS:
            spec = getattr(getattr(handler, method, None), "api_spec", None)
            if spec is not None:
                operations[method] = {"operationId": method + handler.__name__.removesuffix("Handler"),
                                      **_operation(spec, flags)}
        if operations:
            paths[openapi_path(pattern)] = operations
    return {
        "openapi": "3.1.0",
        "info": {"title": "访客预约系统 API", "version": "1.0.6",
                 "description": "访客预约系统 /v1 接口。每个应答都是 {code, err_msg[, data][, page]}。"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "API 密钥（管理员、签到机、闸机）"},
                "wechatSession": {"type": "apiKey", "in": "cookie", "name": "wx_session",
                                  "description": "微信网页授权后的会话（/wechat/oauth）"},
                "adminSession": {"type": "apiKey", "in": "cookie", "name": "admin_session",
                                 "description": "管理后台登录会话（/admin/login）；PUT、POST、DELETE 还需请求头 "
                                                 "X-XSRFToken，其值与 _xsrf Cookie 相同"},
            }
        },
    }


class OpenAPIHandler(APIHandler):
    """The OpenAPI document itself."""

    @api(allow=[Role.PUBLIC], summary="本接口文档（OpenAPI 3.1）", envelope=False,
         data={"type": "object", "required": ["openapi", "info", "paths"],
               "description": "OpenAPI 3.1 文档本身（不是 {code, err_msg} 信封）"})
    async def get(self):
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(self.settings["openapi"])


default_handlers = [(r"/v1/openapi.json", OpenAPIHandler)]
