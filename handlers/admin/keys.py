"""/admin/keys: API keys for kiosks, gates and admin scripts; /admin/users: the admin users."""
from __future__ import annotations

import re

from wxapp.auth import KEY_ROLE_LABELS
from wxapp.errors import ApiError
from wxapp.validation import is_name

from ..base import ADMIN_COOKIE
from .base import AdminPageHandler

KEY_NAME_MAX = 64
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,32}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 128


class KeysPage(AdminPageHandler):
    """Shows the keys and the form to create one."""

    nav = "/admin/keys"

    async def show(self, status: int = 200, *, form: dict | None = None, errors: dict | None = None) -> None:
        """Render the list of keys with the create form (as entered, when it had errors)."""
        self.render_admin("admin/keys.html", status, keys=await self.ctx.api_keys.list(), roles=KEY_ROLE_LABELS,
                          form=form or {"name": "", "role": "gate"}, errors=errors or {})


class KeysHandler(KeysPage):
    """GET lists the keys; POST creates one and shows its plain key this once."""

    async def get(self):
        await self.show()

    async def post(self):
        form = self.form("name", "role")
        errors = {}
        if not form["name"]:
            errors["name"] = "请填写名称，如“一号门闸机”"
        elif len(form["name"]) > KEY_NAME_MAX:
            errors["name"] = f"名称不能超过 {KEY_NAME_MAX} 个字符"
        elif not is_name(form["name"]):
            errors["name"] = "名称不能含控制字符或文字方向控制字符"
        if form["role"] not in KEY_ROLE_LABELS:
            errors["role"] = "请选择用途"
        if errors:
            await self.show(400, form=form, errors=errors)
            return
        doc, key = await self.ctx.api_keys.create(form["role"], form["name"])
        self.set_header("Cache-Control", "no-store")  # the page holds the plain key
        self.render_admin("admin/key_created.html", doc=doc, key=key, roles=KEY_ROLE_LABELS)


class RevokeKeyHandler(AdminPageHandler):
    """POST /admin/keys/<id>/revoke: stop a key at once."""

    async def post(self, key_id: str):
        await self.ctx.api_keys.revoke(key_id)
        self.redirect("/admin/keys?done=key_revoked")


class UsersPage(AdminPageHandler):
    """Shows the admin users, the add form and a change-password form per user."""

    nav = "/admin/users"

    async def show(self, status: int = 200, *, form: dict | None = None, errors: dict | None = None,
                   changing: str = "") -> None:
        """Render the page; `errors` belong to the add form, or to `changing`'s password form."""
        self.render_admin("admin/users.html", status, users=await self.ctx.admins.list(), form=form or {"username": ""},
                          errors=errors or {}, changing=changing,
                          password_min=PASSWORD_MIN, password_max=PASSWORD_MAX)

    def new_password(self) -> tuple[str, dict]:
        """The password and its confirmation as entered (not stripped), and their errors."""
        password = self.get_body_argument("password", "")
        errors = {}
        if len(password) < PASSWORD_MIN:
            errors["password"] = f"密码至少 {PASSWORD_MIN} 个字符"
        elif len(password) > PASSWORD_MAX:
            errors["password"] = f"密码不能超过 {PASSWORD_MAX} 个字符"
        elif password != self.get_body_argument("password2", ""):
            errors["password2"] = "两次输入的密码不一致"
        return password, errors


class UsersHandler(UsersPage):
    """GET lists the admin users; POST adds one."""

    async def get(self):
        await self.show()

    async def post(self):
        form = self.form("username")
        password, errors = self.new_password()
        if not USERNAME.match(form["username"]):
            errors["username"] = "用户名应为 3–32 个字符，只含字母、数字和 _ . - @"
        if errors:
            await self.show(400, form=form, errors=errors)
            return
        try:
            await self.ctx.admins.create(form["username"], password)
        except ApiError as exc:  # the name is taken
            await self.show(exc.status, form=form, errors={"username": exc.message})
            return
        self.redirect("/admin/users?done=user_created")


class PasswordHandler(UsersPage):
    """POST /admin/users/password: set a user's password."""

    async def post(self):
        username = self.get_body_argument("username", "")
        password, errors = self.new_password()
        if errors:
            await self.show(400, errors=errors, changing=username)
            return
        if not await self.ctx.admins.set_password(username, password):
            raise ApiError(404, "该管理员不存在")
        # Whoever held the old password is logged out; the admin changing their own keeps this session.
        current = self._session_id(ADMIN_COOKIE, self.ctx.config.admin_session_ttl)
        await self.ctx.admin_sessions.end_all(username, keep=current if username == self.principal.username else None)
        self.redirect("/admin/users?done=password_changed")


default_handlers = [
    (r"/admin/keys", KeysHandler),
    (r"/admin/keys/([^/]+)/revoke", RevokeKeyHandler),
    (r"/admin/users", UsersHandler),
    (r"/admin/users/password", PasswordHandler),
]
