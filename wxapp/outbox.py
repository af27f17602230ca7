"""The outbox: notifications written with the state change that causes them (CONTRACT §6).

A state change adds its event to the record's `pending_events` in the same single-document
update, so the two can never part; `materialize` then turns pending events into one outbox
entry per channel (ids `<event>:<record id>:<channel>`, so none is ever written twice) and
clears them. `sweep` finishes the job for a process that died in between."""
from __future__ import annotations

import contextlib
import logging
import math
from typing import AsyncIterator, Callable, Iterable

from .bindings import Bindings
from .events import EVENTS
from .paging import page_of, windows
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

# The lists walk the created_at indexes ("created", or "status_created" for one status: equality and
# a range) newest first in bounded windows (wxapp.paging.windows), each holding about WINDOW_ENTRIES
# entries, the first FIRST_WINDOW seconds wide: SecantusDB reads the whole range a query names (and
# sorts in memory even in an index's order), so no query may be open-ended.
WINDOW_ENTRIES = 200
COUNTING_WINDOW_ENTRIES = 500  # the /v1 list counts every entry, reading only their times (~25 ms a window at 100k)
FIRST_WINDOW = 3600
# Every entry was created after this (created_at is a Unix time): a walk down to it is exact, and the
# empty years below the oldest entry are crossed in about ten reads that find nothing in the index.
EPOCH = 0.0
# How far ahead of this process's clock another process's may have dated an entry.
CLOCK_SKEW = 60


def _key(entry: dict) -> tuple:
    """The lists' order: by creation time, then id (the entries of one state change share a time)."""
    return entry["created_at"], entry["_id"]


class Outbox:
    """The outbox collection's one owner: writes entries for records' pending events, hands them to
    the delivery worker (wxapp.delivery) and records what became of them."""

    def __init__(self, storage: Storage, bindings: Bindings, clock: Callable[[], float], *,
                 on_write: Callable[[], None]):
        self.storage = storage
        self.bindings = bindings
        self.clock = clock
        self.on_write = on_write  # called after entries become due, to wake the delivery worker
        self.window_entries = WINDOW_ENTRIES

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

    def _windows(self, status: str | None, low: float, high: float, *, fields: dict | None = None,
                 size: int = 0, oldest_first: bool = False) -> AsyncIterator[list[dict]]:
        """The entries (of `status`, when given) created in [low, high), in windows (see WINDOW_ENTRIES),
        each in no particular order."""
        async def read(start: float, end: float) -> list[dict]:
            where: dict = {"created_at": {"$gte": start, "$lt": end}}
            if status:
                where = {"status": status, **where}
            return await self.storage.outbox.find(where, fields)

        return windows(read, low, high, size=size or self.window_entries, first=FIRST_WINDOW,
                       oldest_first=oldest_first)

    def _top(self) -> float:
        """Above the creation time of every entry."""
        return self.clock() + CLOCK_SKEW

    async def list(self, status: str | None, page: int, size: int) -> tuple[list[dict], dict]:
        """One page of entries (of `status`, when given), newest first, with the count of all of them
        (GET /v1/notifications): every entry is counted from its time alone, walked in windows, and
        the page's entries are then read whole by id."""
        skip, count, ids = (page - 1) * size, 0, []
        walk = self._windows(status, EPOCH, self._top(), fields={"created_at": 1}, size=COUNTING_WINDOW_ENTRIES)
        async for window in walk:
            window.sort(key=_key, reverse=True)
            ids += [entry["_id"] for entry in window[max(0, skip - count):max(0, skip + size - count)]]
            count += len(window)
        return await self.storage.outbox.by_ids(ids), page_of(count, page, size)

    async def browse(self, status: str | None, size: int, *, before: tuple[float, str] | None = None,
                     after: tuple[float, str] | None = None) -> tuple[list[dict], dict]:
        """`size` entries (of `status`, when given), newest first, for /admin/notifications, paged by
        the position (created_at, id) of an entry: the newest ones; those just older than `before`;
        or those just newer than `after` (the newest ones when fewer than `size` are). Also whether
        entries lie beyond them: {"older": bool, "newer": bool}. Only the windows up to the page's
        end are read, however many entries there are."""
        if after is not None:
            newer = await self._collect(status, size + 1, max(EPOCH, after[0]), self._top(), after=after)
            if len(newer) > size:
                return newer[size - 1::-1], {"older": True, "newer": True}
            before = None  # the newest page
        high = min(math.nextafter(before[0], math.inf), self._top()) if before is not None else self._top()
        older = await self._collect(status, size + 1, EPOCH, high, before=before)
        return older[:size], {"older": len(older) > size, "newer": before is not None}

    async def _collect(self, status: str | None, limit: int, low: float, high: float, *,
                       before: tuple | None = None, after: tuple | None = None) -> list[dict]:
        """Up to `limit` entries created in [low, high) whose position is below `before` (newest
        first) or, given `after`, above it (oldest first)."""
        found: list[dict] = []
        walk = self._windows(status, low, high, oldest_first=after is not None)
        async with contextlib.aclosing(walk):
            async for window in walk:
                window.sort(key=_key, reverse=after is None)
                found += [entry for entry in window
                          if (before is None or _key(entry) < before) and (after is None or _key(entry) > after)]
                if len(found) >= limit:
                    break
        return found[:limit]

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
