"""A near cache: small values from Redis kept in this process, so a hit costs no round trip.

Every change is published on a Redis channel; each process drops the changed keys the moment the
message arrives (its own changes at once). While the subscription is not confirmed, or after it
broke, the cache is empty and bypassed, so a process never answers from values it might not have
heard were changed. A value read from Redis is kept only if no change arrived during the read.

Every process also publishes an empty change once a `poll` (`beat`), so a listener can tell a quiet
channel from one nobody can write to (Redis paused or refusing writes): `heard_within`."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Awaitable, Callable, TypeVar

log = logging.getLogger(__name__)

CHANNEL = "nearcache:changes"
T = TypeVar("T")


class NearCache:
    """Values by Redis key, valid while this process listens to the change channel."""

    def __init__(self, redis, *, ttl: float = 30.0, max_entries: int = 100_000, poll: float = 1.0):
        self.redis = redis
        self.poll = poll  # seconds a read of the channel waits; below the client's socket timeout
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0  # counts changes heard; a read that saw one must not be cached
        self.live = False
        self.heard_at = -math.inf  # monotonic time of the last message on the channel
        self._entries: dict[str, tuple[float, str]] = {}
        self._reads: dict[tuple, asyncio.Future] = {}  # shared() reads under way

    def get(self, key: str) -> str | None:
        """The cached value, or None (not cached, expired, or the cache is not live)."""
        if not self.live:
            return None
        item = self._entries.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: str, generation: int) -> None:
        """Keep a value read from Redis when the read began at `generation` and nothing changed since."""
        if not self.live or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    async def shared(self, what: tuple, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`, shared by every caller asking for `what` while it is under way, unless a change
        was heard since it began. When entries expire or change under load, every request in flight
        asks at once; each reading alone queues behind the others for the Redis client's connections
        (it hands them out one event-loop pass at a time), which made gate scans wait up to half a second."""
        flight = (self.generation, *what)
        task = self._reads.get(flight)
        if task is None:
            task = self._reads[flight] = asyncio.ensure_future(read())
            task.add_done_callback(lambda _: self._reads.pop(flight, None))
        return await asyncio.shield(task)

    def _drop(self, keys) -> None:
        self.generation += 1
        for key in keys:
            self._entries.pop(key, None)

    async def changed(self, keys: list[str]) -> None:
        """Tell every process (this one at once) that these Redis keys changed."""
        self._drop(keys)
        await self.redis.publish(CHANNEL, json.dumps(keys))

    def heard_within(self, seconds: float) -> bool:
        """Whether the channel carried a message (a change or a heartbeat) in the last `seconds`."""
        return self.live and time.monotonic() - self.heard_at <= seconds

    async def beat(self) -> None:
        """Publish a heartbeat once a `poll` until cancelled; one that cannot go out in time is dropped."""
        while True:
            try:
                await asyncio.wait_for(self.redis.publish(CHANNEL, "[]"), self.poll)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away or not taking writes: listeners notice the silence
                pass
            await asyncio.sleep(self.poll)

    async def listen(self) -> None:
        """Follow the change channel until cancelled; reconnect after failures."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while True:
                        # A quiet channel is not a broken one: wait in short polls, never past the
                        # client's socket timeout; each poll lets redis-py ping a connection idle
                        # for its health-check interval, so a dead one still raises.
                        message = await pubsub.get_message(timeout=self.poll)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            self.live = True
                        elif message["type"] == "message":
                            self.heard_at = time.monotonic()
                            keys = json.loads(message["data"])
                            if keys:
                                self._drop(keys)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: forget everything and try again
                log.warning("near cache lost its change channel: %s", exc)
            finally:
                self.live = False
                self._entries.clear()
                self.generation += 1
            await asyncio.sleep(1.0)
