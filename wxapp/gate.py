"""Gate decisions on QR tokens (seed admin 4.2, CONTRACT §5): this process's near cache first, then
Redis, then MongoDB."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import AsyncIterator, Awaitable, Callable

from .auth import Principal
from .nearcache import NearCache
from .storage import DESCENDING, Storage
from .validation import Field, Schema, name_field

log = logging.getLogger(__name__)

OK, UNKNOWN, NOT_STARTED, NOT_SIGNED_IN, NO_PERMISSION, EXPIRED = 0, -201, -202, -203, -204, -209
MESSAGES = {
    OK: "",
    UNKNOWN: "二维码无效",
    NOT_STARTED: "未到访问时间",
    NOT_SIGNED_IN: "未签到",
    NO_PERMISSION: "无通行权限",
    EXPIRED: "通行权限已过期",
}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_DAY = 86400
_UNREAD = object()
# How far a bucket's last entry may lie after its first: the flush interval plus a slow insert.
BUCKET_SPAN = 60
# The body of a scan, as the gates send it.
SCAN = Schema(
    Field("qrcode", max_length=512, description="二维码内容（整段 JSON 或其中的 qrcode）"),
    name_field("gate", 64, required=False, allow_empty=True, description="闸机名称，记入日志"),
    Field("direction", default="in", choices=["in", "out"],
          description="in 进门（默认）；out 出门：已知的二维码一律放行，并记为离开"),
)
SCAN_MAX_BODY = 8 * 1024


def parse_qrcode(content) -> tuple[str, int | None] | None:
    """(token, record id or None) from the whole QR content or a bare token; None when malformed
    (anything but a string included)."""
    if not isinstance(content, str):
        return None
    content = content.strip()
    record_id = None
    if content.startswith("{"):
        try:
            data = json.loads(content)
            token, record_id = data["qrcode"], data.get("id")
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(token, str) or (record_id is not None and not isinstance(record_id, int)):
            return None
        content = token
    return (content, record_id) if _TOKEN.match(content) else None


def cache_key(token: str) -> str:
    """The Redis key holding what the gate needs to know about a token."""
    return f"qr:{token}"


def decide(entry: dict | None, record_id: int | None, now: float, direction: str = "in") -> int:
    """The decision code for a cached entry, checked in the contract's order; a revoked token's
    entry carries the code it is answered with (`c`). Nobody is kept inside: a known token always
    opens on the way out."""
    if not entry or entry.get("x") or (record_id is not None and record_id != entry.get("r")):
        return UNKNOWN
    if direction == "out":
        return OK
    if "c" in entry:
        return entry["c"]
    if entry.get("d") or not entry.get("a"):
        return NO_PERMISSION
    if not entry.get("i"):
        return NOT_SIGNED_IN
    if now < entry["s"]:
        return NOT_STARTED
    if now >= entry["e"]:
        return EXPIRED
    return OK


def is_pass(entry: dict | None) -> bool:
    """Whether a token's entry is a pass that may still be shown: known and not revoked."""
    return bool(entry) and not (entry.get("x") or entry.get("d") or "c" in entry)


class GateCache:
    """What gates read: one small JSON value per QR token, kept current by every change."""

    def __init__(self, storage: Storage, redis, clock: Callable[[], float], near: NearCache,
                 refusal: Callable[[str], Awaitable[dict | None]]):
        self.storage = storage
        self.redis = redis
        self.clock = clock
        self.near = near
        self.refusal = refusal  # the entry of a token revoked with its record gone (wxapp.revocation)

    def _ttl(self, end_time: int) -> int:
        # Long enough to answer "expired" for a week after the visit, then fall back to MongoDB.
        return max(_DAY, int(end_time - self.clock()) + 7 * _DAY)

    @staticmethod
    def entry(record: dict, person: int) -> dict:
        """The cached facts about one person's token."""
        return {"r": record["_id"], "p": person, "s": record["start_time"], "e": record["end_time"],
                "a": record["is_auth"], "i": 1 if record["signin_time"] else 0}

    async def publish(self, record: dict) -> None:
        """Write every token of a record (after sign-in). A key already there is left alone: it can
        only be the record's revocation, written while this ran."""
        ttl = self._ttl(record["end_time"])
        keys = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for person, p in enumerate([record, *record["retinues"]]):
                if p.get("token"):
                    keys.append(cache_key(p["token"]))
                    pipe.set(keys[-1], json.dumps(self.entry(record, person)), ex=ttl, nx=True)
            await pipe.execute()
        await self.near.changed(keys)

    def held(self, token: str) -> dict | None:
        """The entry this process's near cache holds for a token, or None; nothing is awaited."""
        cached = self.near.get(cache_key(token))
        return None if cached is None else self.decode(cached)

    async def lookup(self, token: str) -> dict:
        """The entry for a token: from the near cache, else Redis, else MongoDB. Scans of the same
        token share one Redis read while it is under way (NearCache.shared)."""
        key = cache_key(token)
        cached = self.near.get(key)
        if cached is None:
            cached = await self.near.shared((key,), lambda: self._read(key))
        return self.decode(cached) if cached else await self.load(token)

    async def _read(self, key: str) -> str | None:
        generation = self.near.generation
        cached = await self.redis.get(key)
        if cached is not None:
            self.near.put(key, cached, generation)
        return cached

    @staticmethod
    def decode(cached: str) -> dict:
        """The entry of a token's cached value (as read from Redis or the near cache)."""
        return json.loads(cached)

    async def load(self, token: str) -> dict:
        """The entry for a token from MongoDB (a cache miss), cached for next time unless a
        revocation wrote the key meanwhile."""
        record = await self.storage.records.find_one({"tokens": token})
        if record is not None and record.get("revoked"):
            entry, ttl = {"r": record["_id"], "c": record["revoked"]["code"]}, 30 * _DAY
        elif record is not None:
            person = [p.get("token") for p in [record, *record["retinues"]]].index(token)
            entry, ttl = self.entry(record, person), self._ttl(record["end_time"])
        elif (refusal := await self.refusal(token)) is not None:
            entry, ttl = refusal, 30 * _DAY
        else:
            entry, ttl = {"x": 1}, 60  # unknown: remember briefly so a flood of bad codes stays cheap
        await self.redis.set(cache_key(token), json.dumps(entry), ex=ttl, nx=True)
        return entry


class Gate:
    """A gate's scan (admin API 4.2): the QR code parsed, the decision taken on what this process,
    Redis or MongoDB knows of its token (revocations screened), and recorded in the gate log.

    When this process holds the token (near cache) and has heard of revocations lately, `scan_now`
    answers without waiting: no task, no await. Otherwise `scan` reads what is missing."""

    def __init__(self, cache: GateCache, revocations, pass_log: "PassLog",
                 note_exit: Callable[[int, int], None], clock: Callable[[], float]):
        self.cache = cache
        self.revocations = revocations  # wxapp.revocation.Revocations
        self.pass_log = pass_log
        self.note_exit = note_exit  # a person left by an exit scan (Visits.note_exit)
        self.clock = clock

    def scan_now(self, principal: Principal, body: dict) -> int | None:
        """The code for a scan (`body` as SCAN loads it), decided and logged at once; None when
        something must be read first (then `scan`)."""
        parsed = parse_qrcode(body["qrcode"])
        if parsed is None:
            return self._log(principal, body, None, None)
        entry = self.cache.held(parsed[0])
        if entry is None or not self.revocations.fresh():
            return None
        return self._log(principal, body, parsed, self.revocations.check(parsed[0], entry))

    async def scan(self, principal: Principal, body: dict) -> int:
        """The code for a scan, reading the token from Redis or MongoDB and the revocations when this
        process does not hold them; ApiError 503 when it cannot tell whether the token was revoked."""
        parsed = parse_qrcode(body["qrcode"])
        entry = None
        if parsed is not None:
            entry = await self.revocations.screen(parsed[0], await self.cache.lookup(parsed[0]))
        return self._log(principal, body, parsed, entry)

    def _log(self, principal: Principal, body: dict, parsed: tuple[str, int | None] | None,
             entry: dict | None) -> int:
        """The decision on a token's entry (already screened for revocations), queued for the gate log
        (never waited for)."""
        now = self.clock()
        direction = body.get("direction", "in")
        code = decide(entry, parsed[1] if parsed else None, now, direction)
        if code == OK and direction == "out" and entry and "c" not in entry:
            self.note_exit(entry["r"], entry["p"])
        self.pass_log.record({
            "time": now, "code": code, "gate": body.get("gate", ""),
            "key_id": principal.key_id, "key_name": principal.key_name or principal.username,
            "record_id": (entry or {}).get("r"), "person": (entry or {}).get("p"),
            "token_prefix": parsed[0][:6] if parsed else "", "direction": direction,
        })
        return code


class PassLog:
    """Records every gate decision in MongoDB off the request's path. Decisions are written in
    buckets (one document per flush holding many entries), so a busy gate costs the database one
    insert every `interval` seconds instead of one per scan."""

    def __init__(self, storage: Storage, *, batch: int = 500, interval: float = 0.5):
        self.storage = storage
        self.batch = batch
        self.interval = interval
        self._pending: list[dict] = []
        self._task: asyncio.Task | None = None
        self._sleeping = False  # the task waits for its interval (not writing yet)
        self._closing = False

    def record(self, entry: dict) -> None:
        """Queue one decision; written within `interval` seconds (plus a write under way)."""
        self._pending.append(entry)
        if self._task is None or self._task.done():
            self._sleeping = True
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        """Write every `interval` while decisions are queued, including those made during a write:
        they must not wait for the next scan, which may come hours later."""
        while True:
            await asyncio.sleep(self.interval)
            self._sleeping = False
            await self.flush()
            if not self._pending or self._closing:
                return
            self._sleeping = True

    async def close(self) -> None:
        """Stop the timer and write what is queued (at shutdown); a write under way is finished."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            if self._sleeping:
                task.cancel()
            else:
                await task
        await self.flush()

    async def upgrade(self) -> None:
        """Bring buckets written before `record_ids` existed up to date, once: they were indexed by
        `entries.record_id`; that index goes when they are done."""
        if "record" not in await self.storage.passes.index_names():
            return
        async for bucket in self.storage.passes.each({"record_ids": {"$exists": False}}, {"entries.record_id": 1}):
            ids = sorted({e["record_id"] for e in bucket["entries"] if e.get("record_id") is not None})
            await self.storage.passes.update_one({"_id": bucket["_id"]}, {"$set": {"record_ids": ids}})
        await self.storage.passes.drop_index("record")
        log.info("gate log: buckets now list their records in record_ids")

    @staticmethod
    def bucket(entries: list[dict]) -> dict:
        """How consecutive decisions are stored: one document, its records listed once in
        `record_ids` (indexed) rather than indexed entry by entry, which cost the database an index
        key per scan."""
        return {"time": entries[0]["time"], "until": entries[-1]["time"], "count": len(entries),
                "record_ids": sorted({e["record_id"] for e in entries if e["record_id"] is not None}),
                "entries": entries}

    async def flush(self) -> None:
        """Write what is queued now. Decisions made while it writes wait for the next interval: under
        steady load, writing them at once would turn the buckets into a stream of small inserts."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.batch):
            chunk = pending[start:start + self.batch]
            try:
                await self.storage.passes.insert_one(self.bucket(chunk))
            except Exception:  # the log must never take the gate down
                log.exception("could not write %d gate decisions", len(chunk))

    async def forget(self, record_ids) -> int:
        """Remove every decision about these records (their data is no longer kept); how many.
        Buckets are written once and never changed otherwise, so each is rewritten without them."""
        ids = set(record_ids)
        removed = 0
        if not ids:
            return 0
        async for bucket in self.storage.passes.each({"record_ids": {"$in": sorted(ids)}}):
            kept = [e for e in bucket["entries"] if e.get("record_id") not in ids]
            removed += len(bucket["entries"]) - len(kept)
            if kept:
                await self.storage.passes.update_one({"_id": bucket["_id"]}, {"$set": {
                    "entries": kept, "count": len(kept),
                    "record_ids": sorted({e["record_id"] for e in kept if e.get("record_id") is not None})}})
            else:
                await self.storage.passes.delete_one({"_id": bucket["_id"]})
        return removed

    async def during(self, start: float, end: float) -> AsyncIterator[dict]:
        """Every decision made in [start, end), in no particular order (read bucket by bucket)."""
        async for bucket in self.storage.passes.each({"time": {"$gte": start - BUCKET_SPAN, "$lt": end}},
                                                     {"entries": 1}):
            for entry in bucket["entries"]:
                if start <= entry["time"] < end:
                    yield entry

    async def entries(self, record_id: int | None = None, limit: int = 100) -> list[dict]:
        """The latest decisions, newest first, optionally of one record."""
        return await self.search(start=0, end=math.inf, record_id=record_id, limit=limit)

    async def search(self, *, start: float, end: float, gate: str | None = None, allowed: bool | None = None,
                     record_id: int | None = None, before: float | None = None, skip: int = 0,
                     limit: int = 100) -> list[dict]:
        """Decisions in [start, end), newest first, at most `limit`: of one gate, allowed or refused
        ones, of one record. Paging: `before` is the time of the last entry shown and `skip` how many
        shown entries have exactly that time (entries of equal time keep a fixed order)."""
        def wanted(e: dict) -> bool:
            return (start <= e["time"] < end and (before is None or e["time"] <= before)
                    and (gate is None or e["gate"] == gate) and (allowed is None or (e["code"] == 0) == allowed)
                    and (record_id is None or e["record_id"] == record_id))

        times = {"$gte": start - BUCKET_SPAN, "$lt": end}
        if before is not None:
            times["$lte"] = before
        query = {"time": times} if record_id is None else {"record_ids": record_id, "time": times}
        keep = limit + skip
        found: list[tuple] = []  # (time, bucket id, position, entry): a fixed order for equal times
        async for bucket in self.storage.passes.each(query, sort=[("time", DESCENDING)]):
            if len(found) >= keep and bucket["time"] + BUCKET_SPAN < found[keep - 1][0]:
                break  # this bucket and every older one hold only older entries than those kept
            found += [(e["time"], bucket["_id"], n, e) for n, e in enumerate(bucket["entries"]) if wanted(e)]
            found.sort(key=lambda f: f[:3], reverse=True)
            del found[keep:]
        shown = min(skip, sum(1 for f in found if f[0] == before))
        return [f[3] for f in found[shown:shown + limit]]
