"""The HTTP layer: `make_app` gathers every module's routes into one Tornado application."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import tornado.web

from wxapp.context import Services
from wxapp.privacy import mask_phone
from wxapp.security import derive_key

from . import (admin, bindings, config, gatepath, h5, health, media, notifications, oauth, openapi, visits,
               wechat_messages)
from .base import DEFAULT_BODY_LIMIT, SMS_CODES, BodyBudget, NotFoundPageHandler, StaticHandler, UnknownApiHandler, log_access

ROOT = Path(__file__).resolve().parent.parent
_MODULES = (visits, health, bindings, config, notifications, openapi, media, oauth, wechat_messages, h5, admin)


def routes() -> list:
    """Every route of the application, the /v1 catch-all last."""
    table = [route for module in _MODULES for route in module.default_handlers]
    return table + [(r"/v1(?:/.*)?", UnknownApiHandler)]


def max_body_size() -> int:
    """The largest request body any route accepts."""
    limits = [DEFAULT_BODY_LIMIT]
    for route in routes():
        for name in ("get", "post", "put", "patch", "delete"):
            spec = getattr(getattr(route[1], name, None), "api_spec", None)
            limits.append(spec.max_body if spec else getattr(route[1], "max_body_size", DEFAULT_BODY_LIMIT))
    return max(limits)


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log; handlers that keep their own record (the gate) log successes at DEBUG only."""
    request = handler.request
    log_access(handler.get_status(), request.method, request.uri, request.remote_ip, request.request_time(),
               quiet=getattr(handler, "quiet_access_log", False))


def make_app(ctx: Services, **overrides) -> tornado.web.Application:
    """The Tornado application over the built services; shared by server.py and the tests."""
    table = routes()
    jinja_env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=jinja2.select_autoescape(["html"]))
    jinja_env.filters["mask_phone"] = mask_phone
    settings = dict(
        context=ctx,
        cookie_secret=derive_key(ctx.config.secret_key, "cookie-signing").hex(),
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"samesite": "Strict", "path": "/"},
        jinja_env=jinja_env,
        static_path=str(ROOT / "h5"),
        static_url_prefix="/h5/static/",
        static_handler_class=StaticHandler,
        body_budget=BodyBudget(),
        default_handler_class=NotFoundPageHandler,
        compress_response=True,
        log_function=log_request,
        openapi=json.dumps(openapi.build_openapi(table, [SMS_CODES] if ctx.codes.required else []),
                           ensure_ascii=False),
    )
    settings.update(overrides)
    return gatepath.Application(table, **settings)
