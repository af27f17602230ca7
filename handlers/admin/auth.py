"""/admin/login and /admin/logout (CONTRACT §4)."""
from __future__ import annotations

import logging

from wxapp.auth import safe_next

from ..base import ADMIN_COOKIE, PageHandler
from .base import HOME

log = logging.getLogger(__name__)


class LoginHandler(PageHandler):
    """GET shows the login form; POST checks the password and starts an admin session."""

    def get(self):
        self.render_page("admin/login.html", next=safe_next(self.get_query_argument("next", None), HOME), error="")

    async def post(self):
        username = self.get_body_argument("username", "").strip()
        password = self.get_body_argument("password", "")
        next_url = safe_next(self.get_body_argument("next", None), HOME)
        throttle, address = self.ctx.login_throttle, self.request.remote_ip
        refused = await throttle.attempt(username, address)
        if refused:
            self.render_page("admin/login.html", status=429, next=next_url, username=username, error=refused)
            return
        if not (username and password) or not await self.ctx.admins.verify(username, password):
            log.warning("failed admin login for %r from %s", username, address)
            self.render_page("admin/login.html", status=401, next=next_url, error="用户名或密码错误",
                             username=username)
            return
        await throttle.succeeded(username, address)
        sid = await self.ctx.admin_sessions.create({"username": username}, owner=username)
        self.start_session_cookie(ADMIN_COOKIE, sid, self.ctx.config.admin_session_ttl)
        log.info("admin %r logged in from %s", username, address)
        self.redirect(next_url)


class LogoutHandler(PageHandler):
    """POST ends the admin session."""

    async def post(self):
        sid = self._session_id(ADMIN_COOKIE, self.ctx.config.admin_session_ttl)
        if sid:
            await self.ctx.admin_sessions.delete(sid)
        self.clear_cookie(ADMIN_COOKIE, path="/")
        self.redirect("/admin/login")


default_handlers = [
    (r"/admin/login", LoginHandler),
    (r"/admin/logout", LogoutHandler),
]
