"""WeChat web-page OAuth: how an H5 user gets a session (CONTRACT §4)."""
from __future__ import annotations

import logging
import re
from urllib.parse import quote

from wxapp import security
from wxapp.auth import OAuthStates, safe_next
from wxapp.errors import ApiError
from wxapp.wechat import WeChatUnavailable

from .base import WECHAT_COOKIE, PageHandler

log = logging.getLogger(__name__)

DEFAULT_NEXT = "/h5/"
CALLBACK_PATH = "/wechat/oauth/callback"
# The short-lived cookie that ties a login's `state` to the browser that started it.
LOGIN_COOKIE = "wx_login"
_NONCE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def login_url(next_url: str) -> str:
    """Where an H5 page without a session sends the user, to come back to `next_url`."""
    return "/wechat/oauth?next=" + quote(next_url, safe="/")


class OAuthStartHandler(PageHandler):
    """GET /wechat/oauth?next=/h5/...: send the user to WeChat's authorize page."""

    async def get(self):
        if not self.ctx.config.wechat_configured:
            raise ApiError(503, "公众号尚未配置，请联系管理员")
        next_url = safe_next(self.get_query_argument("next", None), DEFAULT_NEXT)
        state = await self.ctx.oauth_states.issue(next_url, self._browser_nonce())
        redirect_uri = await self.public_url(CALLBACK_PATH)
        self.redirect(self.ctx.oauth.authorize_url(redirect_uri, state))

    def _browser_nonce(self) -> str:
        """This browser's login nonce: the one it holds (two tabs logging in at once keep working),
        else a new one; its cookie lives as long as a state."""
        nonce = self.get_cookie(LOGIN_COOKIE, "")
        if not _NONCE.fullmatch(nonce):
            nonce = security.new_token(24)
        self.set_cookie(LOGIN_COOKIE, nonce, max_age=OAuthStates.TTL, httponly=True, samesite="Lax",
                        path="/wechat/oauth")
        return nonce


class OAuthCallbackHandler(PageHandler):
    """GET /wechat/oauth/callback?code&state: check the state, fetch the user, start a session."""

    async def get(self):
        next_url = await self.ctx.oauth_states.consume(self.get_query_argument("state", ""),
                                                      self.get_cookie(LOGIN_COOKIE))
        if next_url is None:
            raise ApiError(400, "登录链接已失效，请从公众号菜单重新进入")
        code = self.get_query_argument("code", "")
        if not code:
            raise ApiError(403, "您未同意授权，无法使用访客预约服务")
        try:
            user = await self.ctx.oauth.fetch_user(code, await self.public_url(CALLBACK_PATH))
        except WeChatUnavailable:
            raise ApiError(502, "微信登录失败，请稍后重试") from None
        await self.ctx.wechat_users.save(user["openid"], user["nickname"], user["headimgurl"])
        sid = await self.ctx.wechat_sessions.create({"openid": user["openid"]})
        self.start_session_cookie(WECHAT_COOKIE, sid, self.ctx.config.wechat_session_ttl)
        log.info("WeChat user %s logged in", user["openid"])
        self.redirect(next_url)


default_handlers = [
    (r"/wechat/oauth", OAuthStartHandler),
    (CALLBACK_PATH, OAuthCallbackHandler),
]
