"""/admin/settings: Koala's address and account with a connection test, this system's public URL,
the message templates, and how long personal data is kept (with what the retention job last did)."""
from __future__ import annotations

import json

from wxapp.errors import ApiError
from wxapp.events import EVENT_LABELS, EVENTS, TEMPLATE_VALUES
from wxapp.koala import KoalaClient, KoalaError
from wxapp.system_settings import (HOST_CHANGED, PASSWORD_MASK, RETENTION_SCHEMA, SERVERS_SCHEMA, TEMPLATES_SCHEMA,
                                   KoalaAccount, koala_base_url)
from wxapp.validation import Schema

from .base import AdminPageHandler

# The fields' names in error messages ("参数 koala_ip …" becomes "考拉主机地址…").
LABELS = {
    "koala_ip": "考拉主机地址", "koala_username": "考拉用户名", "koala_password": "考拉密码",
    "cloud_url": "本系统对外网址", "verify_code_sms_id": "模板 ID", "wechat_fields": "微信模板字段映射",
    "reminder_hour": "提醒时间", "retention_days": "保留天数",
}
SERVER_FIELDS = ("koala_ip", "koala_username", "koala_password", "cloud_url")
KOALA_FIELDS = ("koala_ip", "koala_username", "koala_password")
TEMPLATE_FIELDS = tuple(field.name for field in TEMPLATES_SCHEMA.fields)
KOALA_OK = "连接成功：已登录考拉并读取员工列表"


def check_fields(schema: Schema, values: dict, names: tuple[str, ...]) -> tuple[dict, dict]:
    """Check the named fields of `schema` one by one, so that every error can be shown next to its
    field: the parsed values and the errors by field name."""
    parsed, errors = {}, {}
    for field in schema.fields:
        if field.name in names:
            try:
                parsed[field.name] = field.parse(values[field.name], textual=True)  # form values are text
            except ApiError as exc:
                rest = exc.message.removeprefix(f"参数 {field.name}").lstrip()
                errors[field.name] = LABELS.get(field.name, "模板 ID") + rest
    return parsed, errors


class SettingsPage(AdminPageHandler):
    """Shows the servers and templates forms, with stored or entered values."""

    nav = "/admin/settings"

    async def show(self, status: int = 200, *, servers: dict | None = None, templates: dict | None = None,
                   errors: dict | None = None, koala_test: tuple[bool, str] | None = None,
                   retention: dict | None = None) -> None:
        """Render the page; `servers`/`templates` are the entered values to show instead of the stored ones."""
        stored = await self.ctx.system_settings.servers()
        if templates is None:
            templates = await self.ctx.system_settings.templates()
            mapping = templates["wechat_fields"]
            templates["wechat_fields"] = json.dumps(mapping, ensure_ascii=False, indent=2) if mapping else ""
        self.render_admin(
            "admin/settings.html", status,
            servers={**(servers or stored), "koala_password": ""},  # a password is never sent back
            password_set=stored["koala_password"] == PASSWORD_MASK, templates=templates, errors=errors or {},
            koala_test=koala_test, events=[(event, EVENT_LABELS[event]) for event in EVENTS],
            template_values=TEMPLATE_VALUES,
            retention=retention or await self.ctx.system_settings.retention(),
            retention_run=await self.ctx.retention.last_run(),
        )

    async def entered_servers(self, names: tuple[str, ...]) -> tuple[dict, dict, dict]:
        """The servers form as entered, its parsed values and its errors; an empty password stands
        for the stored one, which is kept for the host it was saved for only."""
        entered = self.form(*SERVER_FIELDS)
        stored = (await self.ctx.system_settings.servers())["koala_password"]
        values = {**entered, "koala_password": entered["koala_password"] or stored}
        parsed, errors = check_fields(SERVERS_SCHEMA, values, names)
        if parsed.get("koala_password") == PASSWORD_MASK and "koala_ip" in parsed:
            try:
                parsed["koala_password"] = await self.ctx.system_settings.stored_password_for(parsed["koala_ip"])
            except ApiError:
                errors["koala_password"] = HOST_CHANGED
        return entered, parsed, errors


class SettingsHandler(SettingsPage):
    """GET /admin/settings."""

    async def get(self):
        await self.show()


class ServersHandler(SettingsPage):
    """POST /admin/settings/servers: save the servers form."""

    async def post(self):
        entered, values, errors = await self.entered_servers(SERVER_FIELDS)
        if errors:
            await self.show(400, servers=entered, errors=errors)
            return
        await self.ctx.system_settings.save_servers(values)
        self.redirect("/admin/settings?done=servers_saved")


class KoalaTestHandler(SettingsPage):
    """POST /admin/settings/koala-test: log into Koala with the values as entered, without saving them."""

    async def post(self):
        entered, values, errors = await self.entered_servers(KOALA_FIELDS)
        if errors:
            await self.show(400, servers=entered, errors=errors)
            return

        async def account() -> KoalaAccount:
            return KoalaAccount(koala_base_url(values["koala_ip"]), values["koala_username"], values["koala_password"])

        client = KoalaClient(account, self.ctx.redis, timeout=self.ctx.config.http_timeout)
        try:
            await client.check()
            result = (True, KOALA_OK)
        except KoalaError as exc:
            result = (False, exc.message)
        await self.show(servers=entered, koala_test=result)


class TemplatesHandler(SettingsPage):
    """POST /admin/settings/templates: save the message templates form."""

    async def post(self):
        entered = self.form(*TEMPLATE_FIELDS)
        values = dict(entered)
        errors = {}
        try:
            values["wechat_fields"] = json.loads(entered["wechat_fields"]) if entered["wechat_fields"] else {}
        except ValueError:
            errors["wechat_fields"] = "微信模板字段映射不是合法的 JSON"
        # An empty reminder hour keeps the stored one.
        names = tuple(name for name in TEMPLATE_FIELDS
                      if name not in errors and not (name == "reminder_hour" and not entered[name]))
        parsed, field_errors = check_fields(TEMPLATES_SCHEMA, values, names)
        errors.update(field_errors)
        if errors:
            await self.show(400, templates=entered, errors=errors)
            return
        await self.ctx.system_settings.save_templates(parsed)
        self.redirect("/admin/settings?done=templates_saved")


class RetentionHandler(SettingsPage):
    """POST /admin/settings/retention: save the retention period; the job applies it at its next round."""

    async def post(self):
        entered = self.form("retention_days")
        parsed, errors = check_fields(RETENTION_SCHEMA, entered, ("retention_days",))
        if errors:
            await self.show(400, errors=errors, retention=entered)
            return
        await self.ctx.system_settings.save_retention(parsed)
        await self.ctx.retention.schedule_now()
        self.redirect("/admin/settings?done=retention_saved")


default_handlers = [
    (r"/admin/settings", SettingsHandler),
    (r"/admin/settings/servers", ServersHandler),
    (r"/admin/settings/koala-test", KoalaTestHandler),
    (r"/admin/settings/templates", TemplatesHandler),
    (r"/admin/settings/retention", RetentionHandler),
]
