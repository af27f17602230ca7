"""GET /v1/openapi.json: an OpenAPI 3.1 document built from the endpoints' own declarations."""
from __future__ import annotations

import re

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
_PAGE = {
    "type": "object",
    "properties": {
        "current": {"type": "integer", "description": "当前页码（从 1 开始）"},
        "size": {"type": "integer", "description": "每页条数"},
        "count": {"type": "integer", "description": "符合条件的记录总数"},
        "total": {"type": "integer", "description": "总页数"},
    },
}
_SECURITY = {
    Role.WECHAT: {"wechatSession": []},
    Role.ADMIN: {"adminSession": []},
    Role.KIOSK: {"apiKey": []},
    Role.GATE: {"apiKey": []},
}


def openapi_path(pattern: str) -> str:
    """A route regex such as `/v1/visit/records/(?P<id>[0-9]+)` as `/v1/visit/records/{id}`."""
    return _GROUP.sub(r"{\1}", pattern).rstrip("$")


def _operation(spec) -> dict:
    op: dict = {"summary": spec.summary, "x-roles": [role.value for role in spec.allow]}
    if spec.description:
        op["description"] = spec.description
    security = []
    for role in spec.allow:
        entry = _SECURITY.get(role)
        if entry and entry not in security:
            security.append(entry)
        if role == Role.ADMIN and {"apiKey": []} not in security:
            security.append({"apiKey": []})
    op["security"] = security
    params = []
    if spec.path is not None:
        params += spec.path.parameters("path")
    if spec.query is not None:
        params += spec.query.parameters("query")
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": spec.body.json_schema()},
                "application/x-www-form-urlencoded": {"schema": spec.body.json_schema()},
            },
        }
    success = {**_ENVELOPE, "properties": dict(_ENVELOPE["properties"])}
    if spec.data is not None:
        success["properties"]["data"] = spec.data
    if spec.paged:
        success["properties"]["page"] = _PAGE
    op["responses"] = {
        "200": {"description": "code 0 为成功", "content": {"application/json": {"schema": success}}},
        "default": {"description": "错误（code 与 HTTP 状态码一致）",
                    "content": {"application/json": {"schema": _ENVELOPE}}},
    }
    return op


def build_openapi(routes) -> dict:
    """The document for every /v1 route that declares its methods with @api."""
    paths: dict = {}
    for pattern, handler in routes:
        if not pattern.startswith("/v1/"):
            continue
        operations = {}
        for method in _METHODS:
            spec = getattr(getattr(handler, method, None), "api_spec", None)
            if spec is not None:
                operations[method] = _operation(spec)
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
                                 "description": "管理后台登录会话（/admin/login）"},
            }
        },
    }


class OpenAPIHandler(APIHandler):
    """The OpenAPI document itself."""

    @api(allow=[Role.PUBLIC], summary="本接口文档（OpenAPI 3.1）")
    async def get(self):
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(self.settings["openapi"])


default_handlers = [(r"/v1/openapi.json", OpenAPIHandler)]
