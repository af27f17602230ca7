"""The settings an admin keeps in MongoDB: Koala and server addresses, message templates, retention."""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

from .errors import bad_request
from .events import EVENTS, SEED_TEMPLATE_ID_FIELDS, TEMPLATE_ID_FIELDS, TEMPLATE_VALUES
from .security import SecretBox
from .storage import Storage
from .validation import Field, Schema

PASSWORD_MASK = "******"
# The stored Koala password goes only to the host it was saved for (else anyone able to change the
# address could have it sent to a host of theirs): a new address needs the password typed again.
HOST_CHANGED = "考拉主机地址已更改，请重新输入考拉密码"

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

DEFAULT_REMINDER_HOUR = 8
TEMPLATES_SCHEMA = Schema(
    *(Field(name, max_length=64, allow_empty=True, required=name in SEED_TEMPLATE_ID_FIELDS,
            description="模板 ID，空字符串表示不发送该渠道" + ("" if name in SEED_TEMPLATE_ID_FIELDS else "；不传则保留原值"))
      for name in TEMPLATE_ID_FIELDS),
    Field("reminder_hour", "integer", required=False, minimum=0, maximum=23,
          description=f"来访当天几点提醒访客（0–23，默认 {DEFAULT_REMINDER_HOUR}）；不传则保留原值"),
    Field("verify_code_sms_id", required=False, max_length=64, allow_empty=True, description="绑定验证码短信模板 ID"),
    Field("wechat_fields", "object", required=False, check=_check_wechat_fields,
          description="每个事件的微信模板字段映射，如 {\"approval_pass_to_visitor\": {\"thing1\": \"visitor_name\"}}",
          json_schema={"propertyNames": {"enum": list(EVENTS)}, "additionalProperties": {
              "type": "object", "propertyNames": {"pattern": _TEMPLATE_KEY_PATTERN},
              "additionalProperties": {"type": "string", "enum": list(TEMPLATE_VALUES)}}}),
)

DEFAULT_RETENTION_DAYS = 180
RETENTION_SCHEMA = Schema(
    Field("retention_days", "integer", minimum=7, maximum=3650,
          description=f"来访结束多少天后匿名化访客记录，并删除同样久未使用的绑定（7–3650，默认 {DEFAULT_RETENTION_DAYS}）",
          example=DEFAULT_RETENTION_DAYS),
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


def _password_host(koala_ip: str) -> str:
    """Where a Koala password may be sent: the base URL, compared without regard to case."""
    return koala_base_url(koala_ip).lower()


def _stored_password_host(doc: dict) -> str:
    # Settings saved before passwords were bound to a host: the host they were saved with.
    return doc.get("koala_password_host") or _password_host(doc.get("koala_ip", ""))


class SecretKeyMismatch(RuntimeError):
    """The stored secrets were encrypted with another SECRET_KEY than this process's."""


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
        """Replace the servers settings; a masked password keeps the stored one, for the same Koala
        host only (400 with another)."""
        update = {
            "koala_ip": values["koala_ip"],
            "koala_username": values["koala_username"],
            "cloud_url": values["cloud_url"],
            "updated_at": self.clock(),
        }
        if values["koala_password"] == PASSWORD_MASK:
            await self.stored_password_for(values["koala_ip"])
        else:
            update["koala_password_enc"] = self.box.encrypt(values["koala_password"])
            update["koala_password_host"] = _password_host(values["koala_ip"])
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
        return KoalaAccount(koala_base_url(doc["koala_ip"]), doc.get("koala_username", ""),
                            self._password(doc, doc["koala_ip"]) or "")

    def _password(self, doc: dict, koala_ip: str) -> str | None:
        """The stored password if it may go to `koala_ip`: "" when none is stored, None when it was
        saved for another host."""
        if not doc.get("koala_password_enc"):
            return ""
        if _stored_password_host(doc) != _password_host(koala_ip):
            return None
        return self.box.decrypt(doc["koala_password_enc"])

    async def stored_password_for(self, koala_ip: str) -> str:
        """The stored password, to be sent to `koala_ip`; 400 unless it was saved for that host."""
        password = self._password(await self._load("servers"), koala_ip)
        if password is None:
            raise bad_request(f"参数 koala_password {HOST_CHANGED}")
        return password

    async def templates(self) -> dict:
        """The template settings, with "" for ids never set."""
        doc = await self._load("templates")
        data = {name: doc.get(name, "") for name in TEMPLATE_ID_FIELDS}
        data["verify_code_sms_id"] = doc.get("verify_code_sms_id", "")
        data["reminder_hour"] = doc.get("reminder_hour", DEFAULT_REMINDER_HOUR)
        data["wechat_fields"] = doc.get("wechat_fields", {})
        return data

    async def save_templates(self, values: dict) -> dict:
        """Store the template ids; optional fields left out keep their stored values."""
        update = {name: values[name] for name in SEED_TEMPLATE_ID_FIELDS}
        for name in (*TEMPLATE_ID_FIELDS, "verify_code_sms_id", "wechat_fields", "reminder_hour"):
            if name in values:
                update[name] = values[name]
        update["updated_at"] = self.clock()
        await self.storage.settings.update_one({"_id": "templates"}, {"$set": update}, upsert=True)
        return await self.templates()

    async def check_key(self) -> None:
        """Refuse a SECRET_KEY that cannot read the stored secrets (raise SecretKeyMismatch).

        The first process to start stores a value encrypted with its key; every later one must
        decrypt it (and the Koala password), or it would fail at sign-in and reject the first
        process's sessions."""
        servers = await self._load("servers")
        stored = [("the Koala password", servers["koala_password_enc"])] if servers.get("koala_password_enc") else []
        check = await self._load("secret_key_check")
        if check.get("value"):
            stored.insert(0, ("the key check value", check["value"]))
        for what, token in stored:
            try:
                self.box.decrypt(token)
            except ValueError:
                raise SecretKeyMismatch(
                    f"SECRET_KEY cannot decrypt {what} stored in the database: this process's SECRET_KEY is "
                    "not the one the data was written with. Give every server process the same SECRET_KEY "
                    "(a server that generated its own keeps it in DATA_DIR/secret_key), as well as the "
                    "same MONGO_URI and REDIS_URL."
                ) from None
        if not check.get("value"):
            await self.storage.settings.update_one(
                {"_id": "secret_key_check"},
                {"$setOnInsert": {"value": self.box.encrypt("visitor"), "created_at": self.clock()}}, upsert=True)
            await self.check_key()  # two processes starting at once: whichever wrote first decides

    async def retention(self) -> dict:
        """How long personal data is kept (CONTRACT §9)."""
        doc = await self._load("retention")
        return {"retention_days": doc.get("retention_days", DEFAULT_RETENTION_DAYS)}

    async def save_retention(self, values: dict) -> dict:
        """Store the retention period."""
        await self.storage.settings.update_one(
            {"_id": "retention"}, {"$set": {"retention_days": values["retention_days"], "updated_at": self.clock()}},
            upsert=True)
        return await self.retention()
