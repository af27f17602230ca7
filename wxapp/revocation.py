"""Closing the gate for a record's QR codes, fail-closed, in every process (CONTRACT §5, §9).

Deletion revokes a record's passes today; decline, cancel and check-out take the same path.

- **Commit.** One conditional update of the record sets `revoked` (why, when, and the code the gate
  answers from now on) together with `revoke_pending`. From that moment a gate that reads the
  record from MongoDB refuses, and sign-in (conditional on `revoked` being absent) can no longer
  hand the record new codes.
- **Job.** The record's job document in `revocations` is written next, holding its tokens; `sweep`
  writes it for a process that died in between. Every process follows that collection
  (`follow`, once a `poll`) and refuses the tokens it lists, whatever Redis or the near cache say.
- **Redis.** Then the tokens' Redis entries are overwritten and the change channel tells every
  process's near cache; until Redis has taken it, the job stays `redis_pending` and `sweep` retries.
- **Confirmation.** `revoke` returns once the revocation is in force everywhere: when Redis and the
  change channel took it, or else after `grace + poll`, by which time every process has either read
  the job or stopped opening gates because it could not read (`fresh`)."""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import time
from typing import Callable

from .errors import ApiError
from .gate import NO_PERMISSION, cache_key
from .nearcache import NearCache
from .storage import Storage

log = logging.getLogger(__name__)

# How long a revoked token keeps being refused (rather than unknown) after its record is gone.
REMEMBER_DAYS = 90
# Redis entries of revoked tokens; MongoDB answers after that.
REDIS_TTL = 30 * 86400
# Clock differences between processes that the feed tolerates.
SKEW = 60.0


class Revocations:
    """Revokes records' passes and keeps this process's gate refusing the revoked tokens."""

    def __init__(self, storage: Storage, redis, near: NearCache, clock: Callable[[], float], *,
                 poll: float = 1.0, grace: float = 3.0, keep: float = 2 * 86400, redis_timeout: float = 2.0):
        self.storage = storage
        self.redis = redis
        self.near = near
        self.clock = clock
        self.poll = poll
        self.grace = grace
        self.keep = keep
        self.redis_timeout = redis_timeout
        self._refusals: dict[str, dict] = {}  # token -> the gate entry that refuses it
        self._jobs: dict[int, tuple[float, list[str]]] = {}  # record id -> (changed_at, tokens)
        self._unwritten: dict[int, dict] = {}  # jobs Redis has not taken yet, by record id
        self._polled_at = -math.inf  # monotonic start of the last complete read of the feed
        self._since: float | None = None
        self._warned = False
        self._reading: asyncio.Future | None = None  # a read of the feed shared by the scans waiting for it

    # --- the gate's side ------------------------------------------------------------------------

    def check(self, token: str, entry: dict | None) -> dict | None:
        """The entry a gate decides on: this process's refusal when the token was revoked, else `entry`.
        Only while `fresh`; `screen` makes sure of that."""
        return self._refusals.get(token, entry)

    async def screen(self, token: str, entry: dict | None) -> dict | None:
        """`check`, after reading the feed when this process has not heard of revocations within
        `grace` (the follower keeps that from happening while MongoDB answers); 503 when it still
        cannot know."""
        if not self.fresh():
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(asyncio.wait_for(self.read_feed(), self.poll))
            try:
                await asyncio.shield(self._reading)
            except (asyncio.TimeoutError, OSError):
                pass
            if not self.fresh():
                raise ApiError(503, "暂时无法确认通行权限，请稍后重试")
        return self.check(token, entry)

    def fresh(self) -> bool:
        """Whether this process would have heard of a revocation confirmed `grace` seconds ago."""
        return time.monotonic() - self._polled_at <= self.grace or self.near.heard_within(self.grace)

    async def follow(self) -> None:
        """Read new revocations once a `poll`, until cancelled, and bring Redis in line with those it
        has not taken yet (every process tries: writing a refusal twice does no harm)."""
        while True:
            try:
                if await self.read_feed():
                    for job in list(self._unwritten.values()):
                        await self._to_redis(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # MongoDB failed between two reads: the next round tries again
                log.exception("following revocations failed")
            await asyncio.sleep(self.poll)

    async def read_feed(self) -> bool:
        """Read the revocations written since the last read (all recent ones the first time)."""
        started, now = time.monotonic(), self.clock()
        try:
            if self._since is None:
                queries = [{"changed_at": {"$gte": now - self.keep}}, {"redis_pending": True}]
            else:
                queries = [{"changed_at": {"$gte": self._since - SKEW}}]
            for query in queries:
                async for job in self.storage.revocations.each(query, {"tokens": 1, "code": 1, "changed_at": 1,
                                                                        "redis_pending": 1}):
                    self._remember(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # MongoDB away: `fresh` turns false after `grace`
            if not self._warned:
                log.warning("cannot read revocations: %s", exc)
                self._warned = True
            return False
        if self._warned:
            log.info("reading revocations again")
            self._warned = False
        self._since, self._polled_at = now, started
        self._forget(now)
        return True

    def _remember(self, job: dict) -> None:
        refusal = {"r": job["_id"], "c": job["code"]}
        for token in job["tokens"]:
            self._refusals[token] = refusal
        self._jobs[job["_id"]] = (job["changed_at"], list(job["tokens"]))
        if job.get("redis_pending"):
            self._unwritten[job["_id"]] = job
        else:
            self._unwritten.pop(job["_id"], None)

    def _forget(self, now: float) -> None:
        """Drop refusals old enough for Redis and MongoDB to answer them alone."""
        for record_id, (changed_at, tokens) in list(self._jobs.items()):
            if changed_at < now - self.keep and record_id not in self._unwritten:
                for token in tokens:
                    self._refusals.pop(token, None)
                del self._jobs[record_id]

    # --- revoking -------------------------------------------------------------------------------

    async def revoke(self, record_id: int, reason: str, code: int, *, condition: dict | None = None,
                     update: dict | None = None) -> dict | None:
        """Revoke a record's passes: the gate answers `code` for its tokens from now on, in every
        process, once this returns. `condition` narrows which record states may be revoked; `update`
        is applied with it (a new status, its notifications). Returns the record as updated, or None
        when no record with that id meets `condition` (nothing changed). Raises only when the commit
        itself failed."""
        now = self.clock()
        update = dict(update or {})
        update["$set"] = {**update.get("$set", {}),
                          "revoked": {"reason": reason, "code": code, "at": now}, "revoke_pending": True}
        record = await self.storage.records.find_one_and_update(
            {"_id": record_id, **(condition or {})}, update, return_new=True)
        if record is None:
            return None
        committed = time.monotonic()
        try:
            in_redis = await self.settle(record)
        except asyncio.CancelledError:
            raise
        except Exception:  # committed all the same: the sweep finishes, the wait below makes it hold
            log.exception("revocation of record %s committed, finishing later", record_id)
            in_redis = False
        if not in_redis:
            await asyncio.sleep(max(0.0, committed + self.grace + self.poll - time.monotonic()))
        return record

    async def settle(self, record: dict) -> bool:
        """Write a committed revocation's job, refuse its tokens here, and bring Redis in line;
        whether Redis took it."""
        revoked = record["revoked"]
        tokens = [t for t in record.get("tokens", []) if t]
        expires = max(revoked["at"], record.get("end_time", 0)) + REMEMBER_DAYS * 86400
        job = {"_id": record["_id"], "tokens": tokens, "code": revoked["code"], "reason": revoked["reason"],
               "changed_at": revoked["at"], "redis_pending": True,
               "expires_at": datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)}
        await self.storage.revocations.replace_one({"_id": record["_id"]}, job, upsert=True)
        self._remember(job)
        await self.storage.records.update_one(
            {"_id": record["_id"], "revoked.at": revoked["at"]}, {"$unset": {"revoke_pending": ""}})
        return await self._to_redis(job)

    async def _to_redis(self, job: dict) -> bool:
        keys = [cache_key(token) for token in job["tokens"]]
        if keys:
            value = json.dumps({"r": job["_id"], "c": job["code"]})
            try:
                await asyncio.wait_for(self._write(keys, value), self.redis_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocation of record %s is not in Redis yet: %s", job["_id"], exc)
                return False
        await self.storage.revocations.update_one(
            {"_id": job["_id"], "changed_at": job["changed_at"]}, {"$unset": {"redis_pending": ""}})
        self._unwritten.pop(job["_id"], None)
        return True

    async def _write(self, keys: list[str], value: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, value, ex=REDIS_TTL)
            await pipe.execute()
        await self.near.changed(keys)

    async def sweep(self) -> int:
        """Finish revocations a failure left half done: jobs never written, Redis not updated."""
        done = 0
        async for record in self.storage.records.each({"revoke_pending": True}):
            done += await self.settle(record)
        async for job in self.storage.revocations.each({"redis_pending": True}):
            done += await self._to_redis(job)
        return done

    async def refusal(self, token: str) -> dict | None:
        """The gate entry of a revoked token whose record is gone (MongoDB's answer on a cache miss)."""
        job = await self.storage.revocations.find_one({"tokens": token}, {"code": 1})
        if job is None:
            return None
        return {"r": job["_id"], "c": job["code"]}

    async def upgrade(self) -> None:
        """Turn the tokens of records deleted before revocations existed into revocation jobs, once."""
        legacy = self.storage.revoked_tokens
        by_record: dict[int, list[str]] = {}
        async for doc in legacy.each({}):
            by_record.setdefault(doc["record_id"], []).append(doc["_id"])
        if not by_record:
            return
        now = self.clock()
        for record_id, tokens in by_record.items():
            await self.storage.revocations.update_one({"_id": record_id}, {"$setOnInsert": {
                "tokens": tokens, "code": NO_PERMISSION, "reason": "deleted", "changed_at": now,
                "expires_at": datetime.datetime.fromtimestamp(now + REMEMBER_DAYS * 86400, datetime.timezone.utc),
            }}, upsert=True)
        await legacy.drop()
        log.info("revocations: %d deleted records' tokens moved from revoked_tokens", len(by_record))
