"""The outbox: notifications written with the state change that causes them (CONTRACT §6).

A state change adds its event to the record's `pending_events` in the same single-document
update, so the two can never part; `materialize` then turns pending events into one outbox
entry per channel (ids `<event>:<record id>:<channel>`, so none is ever written twice) and
clears them. `sweep` finishes the job for a process that died in between."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from .bindings import Bindings
from .events import EVENTS
from .paging import page_of
from .errors import ApiError
from .storage import ASCENDING, DuplicateKeyError, Storage

log = logging.getLogger(__name__)

# An entry's course: pending → sending → sent, failed or skipped; cancelled with its record.
STATUSES = ("pending", "sending", "sent", "failed", "skipped", "cancelled")
STATUS_LABELS = {"pending": "待发送", "sending": "发送中", "sent": "已发送", "failed": "发送失败",
                 "skipped": "已跳过", "cancelled": "已取消"}
RETRYABLE = ("failed", "skipped")  # what an admin may send again

# Who each event is for: the visitor of the record or the employee being visited.
RECIPIENT = {
    "approval_reminder_to_employee": "employee",
    "approval_pass_to_visitor": "visitor",
    "signin_to_visitor": "visitor",
    "visitor_signin_to_employee": "employee",
    "decline_to_visitor": "visitor",
    "cancel_to_employee": "employee",
    "cancel_to_visitor": "visitor",
    "visit_reminder_to_visitor": "visitor",
}
assert set(RECIPIENT) == set(EVENTS)

# A visitor's applications to one employee within this many seconds make one reminder (per
# channel): a burst of applications is not a burst of messages. Every application is still listed.
BATCH_WINDOW = 300
BATCHED = {"approval_reminder_to_employee"}


class Outbox:
    """The outbox collection's one owner: writes entries for records' pending events, hands them to
    the delivery worker (wxapp.delivery) and records what became of them."""

    def __init__(self, storage: Storage, bindings: Bindings, clock: Callable[[], float], *,
                 on_write: Callable[[], None]):
        self.storage = storage
        self.bindings = bindings
        self.clock = clock
        self.on_write = on_write  # called after entries become due, to wake the delivery worker

    async def _recipient(self, event: str, record: dict) -> tuple[str, str]:
        """(openid or "", phone) of the person an event is for."""
        kind = RECIPIENT[event]
        phone = record["phone"] if kind == "visitor" else record["interviewee_phone"]
        binding = await self.bindings.by_phone(kind, phone)
        return (binding["_id"] if binding else ""), phone

    async def materialize(self, record_id: int) -> int:
        """Write the entries for a record's pending events; returns how many were new."""
        record = await self.storage.records.find_one({"_id": record_id})
        if record is None or not record.get("pending_events"):
            return 0
        written = 0
        now = self.clock()
        for event in record["pending_events"]:
            openid, phone = await self._recipient(event, record)
            for channel, to in (("wechat", openid), ("sms", phone)):
                if not to:
                    continue  # a visitor or employee without WeChat binding gets SMS only
                entry = {
                    "_id": f"{event}:{record_id}:{channel}", "event": event, "channel": channel, "to": to,
                    "record_id": record_id, "status": "pending", "attempts": 0, "last_error": "",
                    "due_at": now, "created_at": now,
                }
                if event in BATCHED:
                    entry["batch"] = await self._batch(event, channel, to, record["proposer"], now)
                    if entry["batch"] is None:
                        continue
                try:
                    await self.storage.outbox.insert_one(entry)
                    written += 1
                except DuplicateKeyError:
                    pass
        await self.storage.records.update_one(
            {"_id": record_id}, {"$pullAll": {"pending_events": record["pending_events"]}}
        )
        if written:
            self.on_write()
        return written

    async def _batch(self, event: str, channel: str, to: str, visitor: str, now: float) -> str | None:
        """The batch key of a reminder from `visitor` to `to`, unique per BATCH_WINDOW slot (a second
        one in the same slot is refused by the index), or None when the previous slot's reminder is
        younger than BATCH_WINDOW."""
        slot = int(now // BATCH_WINDOW)
        previous = await self.storage.outbox.find_one(
            {"batch": f"{event}:{channel}:{to}:{visitor}:{slot - 1}"}, {"created_at": 1})
        if previous is not None and previous["created_at"] > now - BATCH_WINDOW:
            return None
        return f"{event}:{channel}:{to}:{visitor}:{slot}"

    async def list(self, status: str | None, page: int, size: int) -> tuple[list[dict], dict]:
        """One page of entries, newest first."""
        query = {"status": status} if status else {}
        count = await self.storage.outbox.count(query)
        cursor = self.storage.outbox.cursor(query).sort("created_at", -1).skip((page - 1) * size).limit(size)
        return await cursor.to_list(size), page_of(count, page, size)

    async def for_record(self, record_id: int) -> list[dict]:
        """A record's notifications, oldest first."""
        entries = await self.storage.outbox.find({"record_id": record_id})
        return sorted(entries, key=lambda e: (e["created_at"], e["_id"]))

    async def retry(self, entry_id: str) -> dict:
        """Queue a failed or skipped entry again (the delivery worker is woken); 404 unknown, 409 when
        it is not failed."""
        entry = await self.storage.outbox.find_one_and_update(
            {"_id": entry_id, "status": {"$in": list(RETRYABLE)}},
            {"$set": {"status": "pending", "due_at": self.clock(), "attempts": 0, "last_error": ""}},
            return_new=True,
        )
        if entry is not None:
            self.on_write()
            return entry
        if await self.storage.outbox.find_one({"_id": entry_id}) is None:
            raise ApiError(404, "通知不存在")
        raise ApiError(409, "只有发送失败或跳过的通知可以重新发送")

    async def cancel(self, record_id: int) -> int:
        """Cancel a record's notifications not sent yet; how many."""
        result = await self.storage.outbox.update_many(
            {"record_id": record_id, "status": "pending"}, {"$set": {"status": "cancelled"}})
        return result.modified

    async def forget(self, record_ids: list[int]) -> int:
        """Delete the notifications of records whose personal data is no longer kept (each names its
        recipient's phone or openid); how many."""
        if not record_ids:
            return 0
        return await self.storage.outbox.delete_many({"record_id": {"$in": record_ids}})

    # --- the delivery worker's side ----------------------------------------------------------------

    async def claim(self, owner: str, lease: float, *, channel: str | None = None,
                    busy: Iterable[str] = ()) -> dict | None:
        """Take one due entry (of `channel`, or any; none of `busy`) for the sender `owner` by one atomic
        update: a pending one, or one whose sender's lease ran out; it is `owner`'s for `lease`
        seconds (`due_at` is the lease's end). The entry as claimed, or None when nothing is due."""
        now = self.clock()
        query: dict = {"due_at": {"$lte": now}}
        if channel is not None:
            query["channel"] = channel
        if busy:
            query["_id"] = {"$nin": sorted(busy)}
        for status in ("pending", "sending"):
            entry = await self.storage.outbox.find_one_and_update(
                {**query, "status": status},
                {"$set": {"status": "sending", "due_at": now + lease, "lease_owner": owner}, "$inc": {"attempts": 1}},
                sort=[("due_at", ASCENDING)], return_new=True)
            if entry is not None:
                return entry
        return None

    async def renew(self, entry_id: str, owner: str, lease: float) -> None:
        """Extend `owner`'s lease on an entry it is sending by `lease` seconds from now."""
        await self.storage.outbox.update_one({"_id": entry_id, "status": "sending", "lease_owner": owner},
                                             {"$set": {"due_at": self.clock() + lease}})

    async def record_outcome(self, entry_id: str, owner: str, fields: dict) -> None:
        """Record what became of a send (`status` and its details), if `owner` still holds the entry."""
        await self.storage.outbox.update_one({"_id": entry_id, "lease_owner": owner}, {"$set": fields})

    async def sweep(self) -> int:
        """Materialize every record left with pending events (after a crash)."""
        total = 0
        async for doc in self.storage.records.each({"pending_events": {"$in": list(EVENTS)}}, {"_id": 1}):
            total += await self.materialize(doc["_id"])
        if total:
            log.info("outbox sweep wrote %d notifications", total)
        return total
