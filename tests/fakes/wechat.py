"""Fake WeChat Official Account platform: web-page OAuth, access tokens, template messages, menu."""
# API base URL (wechatpy's WeChatOAuth.API_BASE_URL) = `fake.url`; WeChatClient.API_BASE_URL =
# `fake.url + "cgi-bin/"`; OAuth page base (OAUTH_BASE_URL) = `fake.url + "connect/"`.
# Business errors answer HTTP 200 with a non-zero `errcode`, as WeChat does.
from __future__ import annotations

import html
import secrets
import time
from urllib.parse import urlencode

from .base import FakeHandler, FakeServer, serve_forever

INVALID_CREDENTIAL = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}


class AuthorizeHandler(FakeHandler):
    """The page WeChat shows in its browser; here the user agrees at once and is sent back with a code."""

    injectable = False

    def get(self):
        fake: FakeWeChat = self.fake
        appid, redirect_uri = self.get_argument("appid", ""), self.get_argument("redirect_uri", "")
        scope, state = self.get_argument("scope", ""), self.get_argument("state", "")
        openid = self.request.headers.get("X-Fake-Openid") or fake.current_openid
        if appid != fake.app_id:
            return self.page(400, "appid 参数错误")
        if not redirect_uri or self.get_argument("response_type", "") != "code":
            return self.page(400, "redirect_uri 或 response_type 参数错误")
        if scope not in ("snsapi_base", "snsapi_userinfo"):
            return self.page(400, "scope 参数错误")
        if not openid:
            return self.page(400, "没有选择登录的微信用户（fake.login_as）")
        fake.users.setdefault(openid, fake._new_user(openid))
        code = secrets.token_hex(16)
        fake.codes[code] = {"openid": openid, "scope": scope, "at": time.monotonic()}
        sep = "&" if "?" in redirect_uri else "?"
        self.redirect(redirect_uri + sep + urlencode({"code": code, "state": state}))

    def page(self, status: int, message: str):
        self.set_status(status)
        self.finish(f"<!doctype html><meta charset=utf-8><title>微信授权</title><p>{html.escape(message)}</p>")


class SnsAccessTokenHandler(FakeHandler):
    """Exchanges a one-time OAuth code for the user's web access token and openid."""

    def get(self):
        fake: FakeWeChat = self.fake
        if self.get_argument("appid", "") != fake.app_id:
            return self.reply({"errcode": 40013, "errmsg": "invalid appid"})
        if self.get_argument("secret", "") != fake.app_secret:
            return self.reply({"errcode": 40125, "errmsg": "invalid appsecret"})
        if self.get_argument("grant_type", "") != "authorization_code":
            return self.reply({"errcode": 40002, "errmsg": "invalid grant_type"})
        grant = fake.codes.pop(self.get_argument("code", ""), None)  # pop: codes are single use
        if grant is None or time.monotonic() - grant["at"] > fake.code_ttl:
            return self.reply({"errcode": 40029, "errmsg": "invalid code"})
        token = secrets.token_hex(24)
        fake.oauth_tokens[token] = {"openid": grant["openid"], "scope": grant["scope"]}
        self.reply({"access_token": token, "expires_in": 7200, "refresh_token": secrets.token_hex(24),
                    "openid": grant["openid"], "scope": grant["scope"]})


class SnsUserInfoHandler(FakeHandler):
    """The profile of the user an OAuth access token belongs to (needs scope snsapi_userinfo)."""

    def get(self):
        fake: FakeWeChat = self.fake
        grant = fake.oauth_tokens.get(self.get_argument("access_token", ""))
        if grant is None or grant["openid"] != self.get_argument("openid", ""):
            return self.reply({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"})
        if grant["scope"] != "snsapi_userinfo":
            return self.reply({"errcode": 48001, "errmsg": "api unauthorized"})
        user = fake.users[grant["openid"]]
        info = {"openid": user["openid"], "nickname": user["nickname"], "sex": 0, "province": "",
                "city": "", "country": "", "headimgurl": user["headimgurl"], "privilege": []}
        if user["unionid"]:
            info["unionid"] = user["unionid"]
        self.reply(info)


class TokenHandler(FakeHandler):
    """The Official Account's own access token (client_credential)."""

    def get(self):
        fake: FakeWeChat = self.fake
        if self.get_argument("grant_type", "") != "client_credential":
            return self.reply({"errcode": 40002, "errmsg": "invalid grant_type"})
        if self.get_argument("appid", "") != fake.app_id:
            return self.reply({"errcode": 40013, "errmsg": "invalid appid"})
        if self.get_argument("secret", "") != fake.app_secret:
            return self.reply({"errcode": 40125, "errmsg": "invalid appsecret"})
        token = secrets.token_hex(32)
        fake.access_tokens.add(token)
        fake.tokens_issued += 1
        self.reply({"access_token": token, "expires_in": 7200})


class ApiHandler(FakeHandler):
    """A cgi-bin call that needs a valid access token and a JSON body."""

    def authorized_body(self):
        """The JSON body, or None after answering the token or format error."""
        token = self.get_argument("access_token", "")
        if not token:
            self.reply({"errcode": 41001, "errmsg": "access_token missing"})
        elif token not in self.fake.access_tokens:
            self.reply(INVALID_CREDENTIAL)
        elif not isinstance(body := self.json_body(), dict):
            self.reply({"errcode": 47001, "errmsg": "data format error"})
        else:
            return body
        return None


class TemplateSendHandler(ApiHandler):
    """Sends a template message, or answers the error injected for it."""

    def post(self):
        fake: FakeWeChat = self.fake
        body = self.authorized_body()
        if body is None:
            return
        if not body.get("touser"):
            return self.reply({"errcode": 40003, "errmsg": "invalid openid"})
        if not body.get("template_id"):
            return self.reply({"errcode": 40037, "errmsg": "invalid template_id"})
        for failure in fake._template_failures:
            if failure["times"] > 0 and failure["openid"] in (None, body["touser"]):
                failure["times"] -= 1
                return self.reply({"errcode": failure["errcode"], "errmsg": failure["errmsg"]})
        fake.templates_sent.append(body)
        fake._msgid += 1
        self.reply({"errcode": 0, "errmsg": "ok", "msgid": fake._msgid})


class MenuCreateHandler(ApiHandler):
    """Replaces the custom menu."""

    def post(self):
        body = self.authorized_body()
        if body is None:
            return
        if not isinstance(body.get("button"), list) or not 1 <= len(body["button"]) <= 3:
            return self.reply({"errcode": 40016, "errmsg": "invalid button size"})
        self.fake.menu = body
        self.reply({"errcode": 0, "errmsg": "ok"})


class FakeWeChat(FakeServer):
    """WeChat's OAuth, token, template message and menu APIs for one Official Account."""

    name = "wechat"
    default_port = 9001

    def __init__(self, app_id: str = "wxfakeappid", app_secret: str = "fakesecret"):
        super().__init__()
        self.app_id, self.app_secret = app_id, app_secret
        self.users: dict[str, dict] = {}
        self.current_openid: str | None = None
        self.code_ttl = 300.0  # seconds a code lives; a test may lower it to see codes expire
        self.codes: dict[str, dict] = {}
        self.oauth_tokens: dict[str, dict] = {}
        self.access_tokens: set[str] = set()
        self.tokens_issued = 0
        self.templates_sent: list[dict] = []
        self.menu: dict | None = None
        self._template_failures: list[dict] = []
        self._msgid = 2_000_000_000

    def routes(self):
        return [
            (r"/connect/oauth2/authorize", AuthorizeHandler),
            (r"/sns/oauth2/access_token", SnsAccessTokenHandler),
            (r"/sns/userinfo", SnsUserInfoHandler),
            (r"/cgi-bin/token", TokenHandler),
            (r"/cgi-bin/message/template/send", TemplateSendHandler),
            (r"/cgi-bin/menu/create", MenuCreateHandler),
        ]

    def error_body(self, status, message):
        return {"errcode": -1, "errmsg": "system error"}

    @staticmethod
    def _new_user(openid: str, nickname: str = "微信用户", headimgurl: str | None = None,
                  unionid: str | None = None) -> dict:
        # WeChat sends "" for a user without a head image.
        return {"openid": openid, "nickname": nickname, "headimgurl": headimgurl or "", "unionid": unionid}

    def add_user(self, openid: str, nickname: str = "微信用户", headimgurl: str | None = None,
                 unionid: str | None = None) -> dict:
        """Register (or replace) a WeChat user who can log in through OAuth."""
        self.users[openid] = self._new_user(openid, nickname, headimgurl, unionid)
        return self.users[openid]

    def login_as(self, openid: str | None) -> None:
        """The user the next authorize requests log in as (unknown openids are added)."""
        if openid is not None:
            self.users.setdefault(openid, self._new_user(openid))
        self.current_openid = openid

    def expire_tokens(self) -> None:
        """Make every issued Official Account access token invalid (errcode 40001 on use)."""
        self.access_tokens.clear()

    def fail_template(self, errcode: int, errmsg: str, times: int = 1, openid: str | None = None) -> None:
        """The next `times` template sends (to `openid`, or to anyone) answer this errcode."""
        self._template_failures.append({"errcode": errcode, "errmsg": errmsg, "times": times, "openid": openid})

    def reset(self) -> None:
        """Forget requests, sent templates, the menu, failures, the token count; users and tokens stay."""
        super().reset()
        self.tokens_issued = 0
        self.templates_sent.clear()
        self.menu = None
        self._template_failures.clear()


if __name__ == "__main__":
    demo = FakeWeChat()
    demo.add_user("o-demo-visitor", nickname="测试访客")
    demo.login_as("o-demo-visitor")
    serve_forever(demo)
