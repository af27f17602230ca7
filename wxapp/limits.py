"""Rate limits that hold under any concurrency and across server processes.

Every check and its count are one Redis script: a try is counted in the same atomic step that
decides whether it may be judged at all, so however many arrive at once, at most N are ever let
through. A limit counts events in a fixed window that starts with the first one, or (with
`member`) the distinct values seen in that window, such as the phones one WeChat user sent codes to."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
from typing import AsyncIterator, Callable
from zoneinfo import ZoneInfo

from .errors import ApiError

# KEYS: one per limit. ARGV: for each limit its maximum, its window in seconds and its member
# ("" for a plain count). Returns 0 when every limit had room (and all were counted), else the
# 1-based index of the first one that had none (and nothing was counted).
_TAKE = """
for i, key in ipairs(KEYS) do
  local limit, member = tonumber(ARGV[3 * i - 2]), ARGV[3 * i]
  if member == '' then
    if tonumber(redis.call('GET', key) or '0') >= limit then return i end
  elseif redis.call('SISMEMBER', key, member) == 0 and redis.call('SCARD', key) >= limit then
    return i
  end
end
for i, key in ipairs(KEYS) do
  local window, member = tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  local fresh
  if member == '' then
    fresh = redis.call('INCR', key) == 1
  else
    fresh = redis.call('SADD', key, member) == 1 and redis.call('SCARD', key) == 1
  end
  if fresh or redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
return 0
"""

# KEYS: counters to give one back to, never below zero.
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""


@dataclasses.dataclass(frozen=True)
class Limit:
    """At most `limit` events (or distinct `member`s) per `window` seconds under one Redis key."""

    key: str
    limit: int
    window: int
    message: str = "操作过于频繁，请稍后再试"  # the Chinese err_msg of the 429
    member: str = ""


class RateLimiter:
    """Checks and counts several limits in one atomic step."""

    def __init__(self, redis):
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)

    async def exhausted(self, *limits: Limit) -> Limit | None:
        """Count one event against every limit and return None, or return the first limit that has
        no room left (and count nothing)."""
        args: list = []
        for limit in limits:
            args += [limit.limit, limit.window, limit.member]
        index = int(await self._take(keys=[limit.key for limit in limits], args=args))
        return limits[index - 1] if index else None

    async def take(self, *limits: Limit) -> None:
        """Count one event against every limit; 429 with the message of the first one that is full."""
        full = await self.exhausted(*limits)
        if full is not None:
            raise ApiError(429, full.message)

    async def give_back(self, *limits: Limit) -> None:
        """Undo a counted event (the work it allowed failed for reasons of ours); sets keep their members."""
        keys = [limit.key for limit in limits if not limit.member]
        if keys:
            await self._give_back(keys=keys)


def local_day(clock: Callable[[], float], tz: ZoneInfo) -> str:
    """Today in TIMEZONE as YYYYMMDD: the window of the per-day limits."""
    return datetime.datetime.fromtimestamp(clock(), tz).strftime("%Y%m%d")


DAY = 86400 + 3600  # a day's key outlives the day a little, whatever the zone's offset


class VisitLimits:
    """How many applications a visitor, and invitations an employee, may make per day."""

    APPLICATIONS_PER_DAY = 10
    INVITATIONS_PER_DAY = 30

    def __init__(self, limiter: RateLimiter, clock: Callable[[], float], tz: ZoneInfo):
        self.limiter = limiter
        self.clock = clock
        self.tz = tz

    def _limit(self, binding: dict) -> Limit:
        day = local_day(self.clock, self.tz)
        if binding["type"] == "employee":
            return Limit(f"limit:invite:{day}:{binding['phone']}", self.INVITATIONS_PER_DAY, DAY,
                         f"今天的邀约次数已达上限（{self.INVITATIONS_PER_DAY} 次），请明天再试")
        return Limit(f"limit:apply:{day}:{binding['phone']}", self.APPLICATIONS_PER_DAY, DAY,
                     f"今天的访客申请次数已达上限（{self.APPLICATIONS_PER_DAY} 次），请明天再试")

    @contextlib.asynccontextmanager
    async def applying(self, binding: dict) -> AsyncIterator[None]:
        """Count an application (a visitor's) or an invitation (an employee's) of the bound person;
        429 when today's are used up. One refused by the domain (bad interviewee, …) is not counted."""
        limit = self._limit(binding)
        await self.limiter.take(limit)
        try:
            yield
        except BaseException:
            await self.limiter.give_back(limit)
            raise
