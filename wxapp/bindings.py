"""Bindings: a WeChat user bound to an employee in Koala or to a visitor's phone (seed 1, 2, 8, 9)."""
from __future__ import annotations

import logging
from typing import Callable

from .auth import WeChatUsers
from .codes import VerificationCodes
from .errors import ApiError, conflict
from .images import Images
from .koala import KoalaClient, KoalaError, find_employee
from .storage import DuplicateKeyError, Storage

log = logging.getLogger(__name__)

KIND_NAMES = {"employee": "员工", "visitor": "访客"}
# How precisely a binding's last use is kept: one write per user at most this often.
USE_PRECISION = 3600


def avatar_path(binding: dict) -> str:
    """Where a binding's avatar is: /avatar/<name> for an employee's copy out of Koala, the WeChat
    head image URL for a visitor, or ""."""
    avatar = binding.get("avatar", "")
    return f"/avatar/{avatar}" if binding["type"] == "employee" and avatar else avatar


class Bindings:
    """Who each WeChat user is: at most one binding, a phone bound once per kind."""

    def __init__(self, storage: Storage, koala: KoalaClient, images: Images, codes: VerificationCodes,
                 wechat_users: WeChatUsers, clock: Callable[[], float]):
        self.storage = storage
        self.koala = koala
        self.images = images
        self.codes = codes
        self.wechat_users = wechat_users
        self.clock = clock

    async def get(self, openid: str) -> dict | None:
        """The user's binding, or None; its use is noted (bindings unused for the retention period
        are removed)."""
        binding = await self.storage.bindings.find_one({"_id": openid})
        now = self.clock()
        if binding is not None and binding.get("last_used_at", 0) < now - USE_PRECISION:
            await self.storage.bindings.update_one({"_id": openid}, {"$max": {"last_used_at": now}})
            binding["last_used_at"] = now
        return binding

    async def by_phone(self, kind: str, phone: str) -> dict | None:
        """The binding of `kind` for a phone, or None."""
        return await self.storage.bindings.find_one({"type": kind, "phone": phone})

    async def avatars_among(self, names: list[str]) -> set[str]:
        """Which of these image names are the avatar of a binding (the image sweep asks)."""
        found = await self.storage.bindings.find({"avatar": {"$in": names}}, {"avatar": 1})
        return {doc["avatar"] for doc in found}

    async def _existing_or_check(self, openid: str, kind: str, phone: str, code: str | None) -> dict | None:
        """The same binding if it exists already; else None once the user and phone are free and the
        code is right (409 or 400 otherwise)."""
        existing = await self.get(openid)
        if existing is not None:
            if existing["type"] == kind and existing["phone"] == phone:
                return existing
            raise conflict(f"该微信已绑定为{KIND_NAMES[existing['type']]}（{existing['phone']}），请先解除绑定")
        if await self.by_phone(kind, phone):
            raise conflict(f"该手机号已被其他微信绑定为{KIND_NAMES[kind]}")
        await self.codes.check(phone, code)
        return None

    async def _insert(self, doc: dict, phone: str) -> dict:
        try:
            await self.storage.bindings.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.get(doc["_id"])
            if existing is not None:  # the same user bound at the same moment
                raise conflict("该微信已绑定，请先解除绑定") from None
            raise conflict(f"该手机号已被其他微信绑定为{KIND_NAMES[doc['type']]}") from None
        await self.codes.consume(phone)
        return doc

    async def bind_employee(self, openid: str, name: str, phone: str, code: str | None) -> dict:
        """Bind to the Koala employee with this exact name and phone; the avatar is copied out of Koala."""
        existing = await self._existing_or_check(openid, "employee", phone, code)
        if existing is not None:
            return existing
        employee = await find_employee(self.koala, name, phone, "未找到该员工，请确认姓名和手机号与公司登记的一致")
        avatar = await self._copy_avatar(employee.get("avatar") or "")
        doc = {
            "_id": openid, "type": "employee", "phone": phone, "name": employee.get("name", name),
            "department": employee.get("department") or "", "subject_id": int(employee["id"]),
            "avatar": avatar, "created_at": self.clock(), "last_used_at": self.clock(),
        }
        return await self._insert(doc, phone)

    async def _copy_avatar(self, path: str) -> str:
        # Koala sits on the company LAN: phones cannot load its images, so keep a copy.
        if not path:
            return ""
        try:
            data, content_type = await self.koala.fetch_image(path)
        except KoalaError as exc:
            log.warning("could not copy avatar %s out of Koala: %s", path, exc.message)
            return ""
        return await self.images.save(data, content_type)

    async def bind_visitor(self, openid: str, phone: str, code: str | None) -> dict:
        """Bind a visitor's phone; nickname and head image come from their WeChat profile."""
        existing = await self._existing_or_check(openid, "visitor", phone, code)
        if existing is not None:
            return existing
        user = await self.wechat_users.get(openid) or {}
        doc = {
            "_id": openid, "type": "visitor", "phone": phone, "name": user.get("nickname", ""),
            "department": "", "subject_id": -1, "avatar": user.get("headimgurl", ""),
            "created_at": self.clock(), "last_used_at": self.clock(),
        }
        return await self._insert(doc, phone)

    async def unbind(self, openid: str) -> None:
        """Remove the user's binding; 404 when there is none."""
        doc = await self.storage.bindings.find_one_and_delete({"_id": openid})
        if doc is None:
            raise ApiError(404, "没有该微信号绑定的用户")
        if doc["type"] == "employee":
            await self.images.delete([doc.get("avatar")])

    async def remove_unused(self, before: float, limit: int) -> int:
        """Remove up to `limit` bindings last used before `before` (one used meanwhile stays); how many."""
        removed = 0
        for doc in await self.storage.bindings.find({"last_used_at": {"$lt": before}}, {"_id": 1}, limit=limit):
            gone = await self.storage.bindings.find_one_and_delete({"_id": doc["_id"], "last_used_at": {"$lt": before}})
            if gone is not None:
                removed += 1
                if gone["type"] == "employee":
                    await self.images.delete([gone.get("avatar")])
        return removed

    async def ensure_last_used(self) -> None:
        """Give bindings stored before their use was noted a last use of now, once."""
        if await self.storage.counters.find_one({"_id": "binding_last_used"}) is not None:
            return
        await self.storage.bindings.update_many({"last_used_at": {"$exists": False}},
                                                {"$set": {"last_used_at": self.clock()}})
        await self.storage.counters.update_one({"_id": "binding_last_used"}, {"$set": {"done": True}}, upsert=True)
