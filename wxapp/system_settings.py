"""The settings an admin keeps in MongoDB: Koala and server addresses, message templates."""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

from .events import EVENTS, TEMPLATE_ID_FIELDS, TEMPLATE_VALUES
from .security import SecretBox
from .storage import Storage
from .validation import Field, Schema

PASSWORD_MASK = "******"

# Addresses as regular expressions, so that the OpenAPI document states exactly what is accepted.
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_PORT = r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_PATH = r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?"
HTTP_URL_PATTERN = rf"^https?://{_HOST}{_PORT}{_PATH}$"
KOALA_ADDRESS_PATTERN = rf"^(?:https?://{_HOST}{_PORT}{_PATH}|{_HOST}{_PORT})$"
_TEMPLATE_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
_TEMPLATE_KEY = re.compile(_TEMPLATE_KEY_PATTERN[:-1] + r"\Z")


def _without_trailing_slash(value: str) -> str:
    return value.rstrip("/")


def _check_wechat_fields(value: dict) -> dict:
    for event, mapping in value.items():
        if event not in EVENTS:
            raise ValueError(f"中的事件 {event} 不存在，可选：{', '.join(EVENTS)}")
        if not isinstance(mapping, dict):
            raise ValueError(f"中 {event} 应为对象")
        for key, name in mapping.items():
            if not _TEMPLATE_KEY.match(key):
                raise ValueError(f"中 {event} 的模板字段名 {key} 无效")
            if not isinstance(name, str) or name not in TEMPLATE_VALUES:
                raise ValueError(f"中 {event}.{key} 的取值 {name} 无效，可选：{', '.join(TEMPLATE_VALUES)}")
    return value


SERVERS_SCHEMA = Schema(
    Field("koala_ip", max_length=255, pattern=KOALA_ADDRESS_PATTERN, pattern_message="应为主机名、IP、主机:端口 或完整网址",
          check=_without_trailing_slash, description="考拉主机地址：IP、主机:端口或完整网址", example="192.168.18.53"),
    Field("koala_username", max_length=128, description="考拉主机的登录用户名", example="test@megvii.com"),
    Field("koala_password", max_length=128, description=f"考拉主机的登录密码；传 {PASSWORD_MASK} 表示保留原密码"),
    Field("cloud_url", max_length=255, pattern=HTTP_URL_PATTERN, pattern_message="应为 http:// 或 https:// 开头的网址",
          check=_without_trailing_slash, description="本系统对外的网址，所有对外链接以它开头",
          example="https://visit.example.com"),
)

TEMPLATES_SCHEMA = Schema(
    *(Field(name, max_length=64, allow_empty=True, description="模板 ID，空字符串表示不发送该渠道")
      for name in TEMPLATE_ID_FIELDS),
    Field("verify_code_sms_id", required=False, max_length=64, allow_empty=True, description="绑定验证码短信模板 ID"),
    Field("wechat_fields", "object", required=False, check=_check_wechat_fields,
          description="每个事件的微信模板字段映射，如 {\"approval_pass_to_visitor\": {\"thing1\": \"visitor_name\"}}",
          json_schema={"propertyNames": {"enum": list(EVENTS)}, "additionalProperties": {
              "type": "object", "propertyNames": {"pattern": _TEMPLATE_KEY_PATTERN},
              "additionalProperties": {"type": "string", "enum": list(TEMPLATE_VALUES)}}}),
)


@dataclasses.dataclass(frozen=True)
class KoalaAccount:
    """Where Koala is and how to log in."""

    base_url: str
    username: str
    password: str


def koala_base_url(koala_ip: str) -> str:
    """`koala_ip` as a base URL: a bare host or host:port means plain HTTP."""
    return koala_ip.rstrip("/") if "://" in koala_ip else f"http://{koala_ip}"


class SystemSettings:
    """Reads and writes the servers and templates settings; the Koala password is encrypted at rest."""

    def __init__(self, storage: Storage, box: SecretBox, clock: Callable[[], float]):
        self.storage = storage
        self.box = box
        self.clock = clock

    async def _load(self, name: str) -> dict:
        return await self.storage.settings.find_one({"_id": name}) or {}

    async def servers(self) -> dict:
        """The servers settings as GET shows them: the password masked."""
        doc = await self._load("servers")
        return {
            "koala_ip": doc.get("koala_ip", ""),
            "koala_username": doc.get("koala_username", ""),
            "koala_password": PASSWORD_MASK if doc.get("koala_password_enc") else "",
            "cloud_url": doc.get("cloud_url", ""),
        }

    async def save_servers(self, values: dict) -> dict:
        """Replace the servers settings; a masked password keeps the stored one."""
        update = {
            "koala_ip": values["koala_ip"],
            "koala_username": values["koala_username"],
            "cloud_url": values["cloud_url"],
            "updated_at": self.clock(),
        }
        if values["koala_password"] != PASSWORD_MASK:
            update["koala_password_enc"] = self.box.encrypt(values["koala_password"])
        await self.storage.settings.update_one({"_id": "servers"}, {"$set": update}, upsert=True)
        return await self.servers()

    async def cloud_url(self) -> str:
        """The public base URL of this system, without a trailing slash ("" when unset)."""
        return (await self._load("servers")).get("cloud_url", "")

    async def koala_account(self) -> KoalaAccount | None:
        """Koala's address and decrypted credentials, or None when not configured."""
        doc = await self._load("servers")
        if not doc.get("koala_ip"):
            return None
        password = self.box.decrypt(doc["koala_password_enc"]) if doc.get("koala_password_enc") else ""
        return KoalaAccount(koala_base_url(doc["koala_ip"]), doc.get("koala_username", ""), password)

    async def templates(self) -> dict:
        """The template settings, with "" for ids never set."""
        doc = await self._load("templates")
        data = {name: doc.get(name, "") for name in TEMPLATE_ID_FIELDS}
        data["verify_code_sms_id"] = doc.get("verify_code_sms_id", "")
        data["wechat_fields"] = doc.get("wechat_fields", {})
        return data

    async def save_templates(self, values: dict) -> dict:
        """Store the template ids; optional fields left out keep their stored values."""
        update = {name: values[name] for name in TEMPLATE_ID_FIELDS}
        for name in ("verify_code_sms_id", "wechat_fields"):
            if name in values:
                update[name] = values[name]
        update["updated_at"] = self.clock()
        await self.storage.settings.update_one({"_id": "templates"}, {"$set": update}, upsert=True)
        return await self.templates()
