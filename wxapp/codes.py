"""SMS verification codes for binding a phone (CONTRACT §5)."""
from __future__ import annotations

import logging
import secrets
from typing import Awaitable, Callable
from zoneinfo import ZoneInfo

from .errors import ApiError, bad_request
from .limits import DAY, Limit, RateLimiter, local_day
from .privacy import mask_phone
from .sms import SmsError, SmsSender
from .validation import mainland_mobile, normalize_phone

log = logging.getLogger(__name__)

CODE_TTL = 300
RESEND_AFTER = 60
PER_DAY = 10
MAX_TRIES = 5
PHONES_PER_USER = 5  # different phones one WeChat user may ask codes for, per hour
PER_ADDRESS = 20  # codes asked from one client address, per hour
HOUR = 3600

# Judge one try at a code: the try is counted before it is compared, in one step, so that however
# many arrive at once at most MAX_TRIES wrong ones are ever compared; the one that reaches
# MAX_TRIES voids the code. A right try is not counted. KEYS[1]: the code's hash;
# ARGV: the code tried, MAX_TRIES. Returns 1 when right.
_CHECK = """
local stored = redis.call('HGET', KEYS[1], 'code')
if not stored then return 0 end
local tries = redis.call('HINCRBY', KEYS[1], 'tries', 1)
if tries > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 0
end
if stored == ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'tries', -1)
  return 1
end
if tries >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
return 0
"""


class VerificationCodes:
    """Six-digit codes in Redis: one per minute and ten per day per phone, five phones per hour per
    WeChat user, twenty codes per hour per client address; five wrong tries void a code."""

    def __init__(self, redis, sender: SmsSender, template: Callable[[], Awaitable[str]],
                 clock: Callable[[], float], tz: ZoneInfo):
        self.redis = redis
        self.sender = sender
        self.template = template
        self.clock = clock
        self.tz = tz
        self.limiter = RateLimiter(redis)
        self._check = redis.register_script(_CHECK)

    @property
    def required(self) -> bool:
        """Whether bindings must present a code (not when SMS is off)."""
        return self.sender.enabled

    def _limits(self, phone: str, openid: str, address: str) -> tuple[Limit, ...]:
        day = local_day(self.clock, self.tz)
        return (
            Limit(f"smscode:wait:{phone}", 1, RESEND_AFTER, "验证码发送过于频繁，请 1 分钟后再试"),
            Limit(f"smscode:day:{day}:{phone}", PER_DAY, DAY, "今天的验证码发送次数已达上限，请明天再试"),
            Limit(f"smscode:user:{openid}", PHONES_PER_USER, HOUR,
                  f"1 小时内最多向 {PHONES_PER_USER} 个不同的手机号发送验证码，请稍后再试", member=phone),
            Limit(f"smscode:addr:{address}", PER_ADDRESS, HOUR, "当前网络发送验证码过于频繁，请 1 小时后再试"),
        )

    async def send(self, phone: str, *, openid: str, address: str) -> None:
        """Send a new code to a mainland mobile, asked by the WeChat user `openid` from `address`;
        429 when asked too often, 502 when SMS fails."""
        if not self.required:
            raise ApiError(400, "短信验证已关闭，绑定无需验证码")
        mobile = mainland_mobile(phone)
        if mobile is None:
            raise bad_request("参数 phone 应为中国大陆手机号码")
        limits = self._limits(mobile, openid, address)
        await self.limiter.take(*limits)
        code = f"{secrets.randbelow(10**6):06d}"
        key = f"smscode:{mobile}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"code": code, "tries": 0})
            pipe.expire(key, CODE_TTL)
            await pipe.execute()
        try:
            await self.sender.send(mobile, await self.template(), {"code": code})
        except SmsError as exc:
            log.warning("verification SMS to %s failed: %s", mask_phone(mobile), exc)
            await self.redis.delete(key)
            await self.limiter.give_back(*limits)
            raise ApiError(502, "短信发送失败，请稍后再试") from None

    async def check(self, phone: str, code: str | None) -> None:
        """400 unless `code` is the live code for `phone`; a wrong try counts, the fifth voids it."""
        if not self.required:
            return
        if not await self._check(keys=[f"smscode:{normalize_phone(phone)}"], args=[code or "", MAX_TRIES]):
            raise bad_request("验证码错误或已过期")

    async def consume(self, phone: str) -> None:
        """Use the code up (the binding it completed succeeded)."""
        await self.redis.delete(f"smscode:{normalize_phone(phone)}")
