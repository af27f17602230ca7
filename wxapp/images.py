"""Images this system serves at /avatar/<name>: employee avatars copied out of Koala, visitor photos."""
from __future__ import annotations

import base64
import binascii
from typing import Awaitable, Callable


from .security import new_token
from .storage import ASCENDING, Storage

MAX_PHOTO_BYTES = 2 * 1024 * 1024
# Seconds an image may wait for the record or binding that names it before the sweep removes it.
SWEEP_GRACE = 3600
_SWEEP = "image_sweep"  # the counters document: images created before `until` have been looked at
_KINDS = {b"\xff\xd8\xff": ("image/jpeg", ".jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", ".png")}


def image_kind(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of a JPEG or PNG, else None."""
    for magic, kind in _KINDS.items():
        if data.startswith(magic):
            return kind
    return None


def decode_photo(value: str) -> bytes:
    """A base64 photo (optionally a data: URL) as bytes; ValueError unless a JPEG/PNG ≤ 2 MB."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("不是有效的 base64 图片") from None
    if len(data) > MAX_PHOTO_BYTES:
        raise ValueError("图片不能超过 2 MB")
    if image_kind(data) is None:
        raise ValueError("只支持 JPEG 或 PNG 图片")
    return data


class Images:
    """Stores image bytes in MongoDB under an unguessable name."""

    def __init__(self, storage: Storage, clock: Callable[[], float]):
        self.storage = storage
        self.clock = clock

    async def save(self, data: bytes, content_type: str | None = None) -> str:
        """Store an image; returns its name (the last part of its URL)."""
        kind = image_kind(data)
        content_type = content_type or (kind[0] if kind else "application/octet-stream")
        name = new_token(16) + (kind[1] if kind else "")
        await self.storage.images.insert_one(
            {"_id": name, "data": data, "content_type": content_type, "created_at": self.clock()}
        )
        return name

    async def get(self, name: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a stored image, or None."""
        doc = await self.storage.images.find_one({"_id": name})
        return (bytes(doc["data"]), doc["content_type"]) if doc else None

    async def delete(self, names) -> None:
        """Remove images no longer referenced."""
        names = [n for n in names if n]
        if names:
            await self.storage.images.delete_many({"_id": {"$in": names}})

    async def sweep(self, named: Callable[[list[str]], Awaitable[set[str]]], grace: float = SWEEP_GRACE,
                    batch: int = 200) -> int:
        """Remove the images that `named` (which of these names does something refer to?) does not
        claim, once they are `grace` seconds old. Each image is looked at once, in order of creation:
        a sweep carries on where the last one stopped. Returns how many were removed."""
        cutoff = self.clock() - grace
        state = await self.storage.counters.find_one({"_id": _SWEEP})
        since = state["until"] if state else 0
        removed, names = 0, []
        async for doc in self.storage.images.each({"created_at": {"$gte": since, "$lt": cutoff}}, {"_id": 1},
                                                  sort=[("created_at", ASCENDING)], batch_size=batch):
            names.append(doc["_id"])
            if len(names) == batch:
                removed += await self._remove_unnamed(names, named)
                names = []
        if names:
            removed += await self._remove_unnamed(names, named)
        await self.storage.counters.update_one({"_id": _SWEEP}, {"$max": {"until": cutoff}}, upsert=True)
        return removed

    async def _remove_unnamed(self, names: list[str], named) -> int:
        orphans = sorted(set(names) - await named(names))
        if orphans:
            await self.storage.images.delete_many({"_id": {"$in": orphans}})
        return len(orphans)
