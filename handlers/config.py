"""Admin API 1 and 2 (seed): server settings and message template settings; the retention period (§9)."""
from __future__ import annotations

from wxapp.auth import Role
from wxapp.system_settings import RETENTION_SCHEMA, SERVERS_SCHEMA, TEMPLATES_SCHEMA

from .base import APIHandler, api


class ServersHandler(APIHandler):
    """1.1 / 1.2 服务器设置: Koala's address and account, and this system's public URL."""

    @api(allow=[Role.ADMIN], summary="读取服务器设置（密码以 ****** 显示）", data=SERVERS_SCHEMA.json_schema())
    async def get(self):
        self.ok(await self.ctx.system_settings.servers())

    @api(allow=[Role.ADMIN], summary="保存服务器设置", body=SERVERS_SCHEMA, data=SERVERS_SCHEMA.json_schema())
    async def put(self):
        self.ok(await self.ctx.system_settings.save_servers(self.body))


class TemplatesHandler(APIHandler):
    """2.1 / 2.2 微信短信模板设置."""

    @api(allow=[Role.ADMIN], summary="读取微信、短信模板设置", data=TEMPLATES_SCHEMA.json_schema())
    async def get(self):
        self.ok(await self.ctx.system_settings.templates())

    @api(allow=[Role.ADMIN], summary="保存微信、短信模板设置", body=TEMPLATES_SCHEMA,
         data=TEMPLATES_SCHEMA.json_schema())
    async def put(self):
        self.ok(await self.ctx.system_settings.save_templates(self.body))


class RetentionHandler(APIHandler):
    """数据保留期限: how long visit records keep personal data and unused bindings are kept."""

    @api(allow=[Role.ADMIN], summary="读取数据保留期限", data=RETENTION_SCHEMA.json_schema())
    async def get(self):
        self.ok(await self.ctx.system_settings.retention())

    @api(allow=[Role.ADMIN], summary="保存数据保留期限（来访结束超过该天数的记录将被匿名化）", body=RETENTION_SCHEMA,
         data=RETENTION_SCHEMA.json_schema())
    async def put(self):
        data = await self.ctx.system_settings.save_retention(self.body)
        await self.ctx.retention.schedule_now()
        self.ok(data)


default_handlers = [
    (r"/v1/config/servers", ServersHandler),
    (r"/v1/config/templates", TemplatesHandler),
    (r"/v1/config/retention", RetentionHandler),
]
