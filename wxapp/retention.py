"""Keeping personal data no longer than needed (CONTRACT §9, PIPL): once a day, records whose visit
ended more than `retention_days` ago are anonymised and bindings unused for as long are removed.

Every process runs the job; a lease in `jobs` lets one of them work at a time, and each record is
anonymised by one conditional update, so nothing is done twice even when a lease runs out under a
slow process. The job works in bounded batches along the index on the visit's end time, from a
cursor kept in `jobs` (visits ended before it are done), so a run reads only the records it changes,
and a run interrupted by a restart goes on where it stopped. What goes with a batch's personal data
(photos, gate-log entries, notifications naming phones) is removed first, then the records are
masked: those without QR codes by one conditional update each, sent together; those with codes one
by one through `Revocations.revoke`, which keeps their token list until the revocation is written
everywhere, then drops it (a record left `retention_pending` by a crash in between is finished by
the next run). How many records and bindings a run handled is tallied in `jobs` and kept as
`last_run` when it is over, for /admin/settings."""
from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Callable
from zoneinfo import ZoneInfo

from .bindings import Bindings
from .gate import NO_PERMISSION, PassLog
from .images import Images
from .outbox import Outbox
from .privacy import mask_phone
from .revocation import Revocations
from .security import new_token
from .storage import ASCENDING, Storage
from .system_settings import SystemSettings
from .visits import search_grams

log = logging.getLogger(__name__)

DAY = 86400
# The range of end times one query reads (see Retention._due).
MIN_SPAN, MAX_SPAN = 3600, 32 * DAY
JOB = "retention"
# Records not anonymised yet and not being deleted.
_OPEN = {"anonymized": {"$ne": True}, "revoked.reason": {"$ne": "deleted"}}
_FIELDS = {"name": 1, "interviewee": 1, "phone": 1, "proposer": 1, "interviewee_phone": 1, "photo": 1, "retinues": 1, "tokens": 1,
           "phones": 1, "parties": 1, "end_time": 1, "anonymized": 1, "revoked": 1}


def mask_name(name: str) -> str:
    """张三 → 张*: the first character and a star."""
    return name[:1] + "*" if name else ""


def photos_of(record: dict) -> list[str]:
    """The stored photos of a record's people."""
    return [p["photo"] for p in [record, *record.get("retinues", [])] if p.get("photo")]


def anonymised(record: dict, now: float) -> dict:
    """The `$set` that anonymises a record. QR tokens are cleared person by person; the record's
    `tokens` list, which the revocation of its passes reads, is left to the caller."""
    name = mask_name(record["name"])
    return {
        "name": name, "grams": search_grams({"name": name, "interviewee": record.get("interviewee", "")}),
        "phone": mask_phone(record["phone"]),
        "proposer": mask_phone(record["proposer"]), "interviewee_phone": mask_phone(record["interviewee_phone"]),
        "photo": "", "token": "",
        "retinues": [{**p, "name": mask_name(p["name"]), "phone": mask_phone(p["phone"]), "photo": "", "token": ""}
                     for p in record.get("retinues", [])],
        "phones": [mask_phone(p) for p in record.get("phones", [])],
        "parties": [mask_phone(p) for p in record.get("parties", [])],
        "anonymized": True, "anonymized_at": int(now),
    }


class Retention:
    """The daily retention job: anonymise old visits, remove unused bindings, remember what it did."""

    def __init__(self, storage: Storage, settings: SystemSettings, revocations: Revocations, images: Images,
                 pass_log: PassLog, outbox: Outbox, bindings: Bindings, clock: Callable[[], float], tz: ZoneInfo, *,
                 batch: int = 200, batches: int = 10, lease: float = 300.0):
        self.storage = storage
        self.settings = settings
        self.revocations = revocations
        self.images = images
        self.pass_log = pass_log
        self.outbox = outbox
        self.bindings = bindings
        self.clock = clock
        self.tz = tz
        self.batch = batch
        self.batches = batches  # batches per call, so one call never holds the periodic loop long
        self.lease = lease

    def _today(self) -> str:
        return datetime.datetime.fromtimestamp(self.clock(), self.tz).date().isoformat()

    async def last_run(self) -> dict | None:
        """What the last complete run did: `finished_at`, `anonymized`, `bindings_removed`, `retention_days`."""
        job = await self.storage.jobs.find_one({"_id": JOB}, {"last_run": 1})
        return (job or {}).get("last_run")

    async def schedule_now(self) -> None:
        """Run again at the next tick (the retention period was changed)."""
        await self.storage.jobs.update_one({"_id": JOB}, {"$set": {"day": ""}})

    async def run(self) -> int:
        """Do up to `batches` batches of today's run, unless it is done for today (in TIMEZONE) or
        another process holds the lease; how many records and bindings this call handled."""
        now = self.clock()
        await self.storage.jobs.update_one(
            {"_id": JOB}, {"$setOnInsert": {"day": "", "lease_until": 0, "through": [0, 0]}}, upsert=True)
        owner = new_token(8)
        claimed = await self.storage.jobs.update_one(
            {"_id": JOB, "day": {"$ne": self._today()}, "lease_until": {"$lt": now}},
            {"$set": {"lease_until": now + self.lease, "owner": owner}})
        if not claimed.modified:
            return 0
        try:
            return await self._work(owner)
        finally:
            await self.storage.jobs.update_one({"_id": JOB, "owner": owner}, {"$set": {"lease_until": 0}})

    async def _work(self, owner: str) -> int:
        days = (await self.settings.retention())["retention_days"]
        cutoff = self.clock() - days * DAY
        # Today's tally, unless a process whose lease ran out has started it already.
        await self.storage.jobs.update_one(
            {"_id": JOB, "running": {"$exists": False}, "day": {"$ne": self._today()}},
            {"$set": {"running": {"started_at": self.clock(), "anonymized": 0, "bindings_removed": 0}}})
        done = 0
        for _ in range(self.batches):
            if not await self._renew(owner):
                return done  # another process took over after our lease ran out: it goes on
            await self._finish_pending()
            more, anonymized = await self._anonymise_batch(cutoff, owner)
            removed = 0 if more else await self.bindings.remove_unused(cutoff, self.batch)
            if removed:
                await self._tally("bindings_removed", removed)
            done += anonymized + removed
            if more or removed:
                await asyncio.sleep(0)
                continue
            await self._complete(owner, days)
            return done
        return done

    async def _complete(self, owner: str, days: int) -> None:
        """Today's run is over: remember what it did."""
        job = await self.storage.jobs.find_one_and_update(
            {"_id": JOB, "owner": owner}, {"$set": {"day": self._today()}, "$unset": {"running": ""}})
        if job is None:
            return
        running = job.get("running") or {}
        last = {"started_at": running.get("started_at", self.clock()), "finished_at": self.clock(),
                "anonymized": running.get("anonymized", 0), "bindings_removed": running.get("bindings_removed", 0),
                "retention_days": days}
        await self.storage.jobs.update_one({"_id": JOB}, {"$set": {"last_run": last}})
        log.info("retention: %d records anonymised, %d bindings removed (kept %d days)",
                 last["anonymized"], last["bindings_removed"], days)

    async def _tally(self, name: str, count: int) -> None:
        """Add to today's tally (also the work of a process whose lease ran out meanwhile)."""
        if count:
            await self.storage.jobs.update_one({"_id": JOB, "running": {"$exists": True}},
                                               {"$inc": {f"running.{name}": count}})

    async def _renew(self, owner: str) -> bool:
        result = await self.storage.jobs.update_one(
            {"_id": JOB, "owner": owner}, {"$set": {"lease_until": self.clock() + self.lease}})
        return result.matched == 1

    async def _due(self, cutoff: float, owner: str) -> list[dict]:
        """The next batch of visits ended before `cutoff`, after the cursor, in the end-time index's order.
        Each query reads one window of end times: SecantusDB reads a range whole before sorting and
        limiting it, so the window is narrowed after a full batch and widened after a short one, and a
        window found empty moves the cursor on (no visit can end in the past any more)."""
        job = await self.storage.jobs.find_one({"_id": JOB}, {"through": 1, "span": 1})
        end, last_id = job.get("through") or [0, 0]
        if not end:
            end = await self._start()
        span = job.get("span") or DAY
        order = [("end_time", ASCENDING), ("_id", ASCENDING)]
        if end <= cutoff:  # the rest of the visits ending at the cursor's time
            batch = await self.storage.records.find({"end_time": end, "_id": {"$gt": last_id}}, _FIELDS,
                                                    sort=order, limit=self.batch)
            if batch:
                return batch
        while end < cutoff:
            until = min(cutoff, end + span)
            batch = await self.storage.records.find({"end_time": {"$gt": end, "$lte": until}}, _FIELDS,
                                                    sort=order, limit=self.batch)
            span = max(MIN_SPAN, span / 2) if len(batch) >= self.batch else min(MAX_SPAN, span * 2)
            if batch:
                await self.storage.jobs.update_one({"_id": JOB, "owner": owner}, {"$set": {"span": span}})
                return batch
            end = until
            await self.storage.jobs.update_one({"_id": JOB, "owner": owner},
                                               {"$set": {"through": [end, 0], "span": span}})
            await asyncio.sleep(0)
        return []

    async def _start(self) -> float:
        """Where the cursor starts the first time: a day before the first stored record was booked
        (record ids grow with time, and a visit ends after it is booked), found by id ranges."""
        top = (await self.storage.counters.find_one({"_id": "records"}) or {}).get("seq", 0)
        for low in range(0, top, 1000):
            found = await self.storage.records.find({"_id": {"$gt": low, "$lte": low + 1000}}, {"create_time": 1})
            if found:
                return max(0, min(r.get("create_time", 0) for r in found) - DAY)
        return 0

    async def _anonymise_batch(self, cutoff: float, owner: str) -> tuple[bool, int]:
        """Anonymise one batch and move the cursor past it: whether there was one, and how many
        records this call changed."""
        batch = await self._due(cutoff, owner)
        if not batch:
            return False, 0
        now = self.clock()
        todo = [r for r in batch
                if not r.get("anonymized") and (r.get("revoked") or {}).get("reason") != "deleted"]
        # First what goes with the personal data: a crash after this leaves the records to be masked again.
        await self.images.delete([photo for r in todo for photo in photos_of(r)])
        await self.pass_log.forget([r["_id"] for r in todo])
        await self.outbox.forget([r["_id"] for r in todo])
        plain = [r for r in todo if not any(r.get("tokens") or [])]
        changed = 0
        if plain:
            changed += await self.storage.records.bulk_update(
                [({"_id": r["_id"], **_OPEN}, {"$set": anonymised(r, now)}) for r in plain])
        revoked = []
        for record in todo:
            if any(record.get("tokens") or []):
                update = {"$set": {**anonymised(record, now), "retention_pending": True}}
                if await self.revocations.revoke(record["_id"], "anonymized", NO_PERMISSION, condition=_OPEN,
                                                 update=update) is not None:
                    revoked.append(record["_id"])
        changed += len(revoked)
        last = batch[-1]
        await self._tally("anonymized", changed)
        await self.storage.jobs.update_one({"_id": JOB, "owner": owner},
                                           {"$set": {"through": [last["end_time"], last["_id"]]}})
        for record_id in revoked:
            await self._drop_tokens(record_id)
        return True, changed

    async def _drop_tokens(self, record_id: int) -> None:
        """Forget an anonymised record's QR tokens once their revocation is written (else the
        revocation's sweep still needs them, and the next run tries again)."""
        await self.storage.records.update_one(
            {"_id": record_id, "retention_pending": True, "revoke_pending": {"$exists": False}},
            {"$set": {"tokens": []}, "$unset": {"retention_pending": ""}})

    async def _finish_pending(self) -> None:
        """Finish records a crash left between masking and dropping their tokens."""
        pending = await self.storage.records.find({"retention_pending": True}, {"_id": 1}, limit=self.batch)
        for record in pending:
            await self._drop_tokens(record["_id"])
