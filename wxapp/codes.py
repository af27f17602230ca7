"""SMS verification codes for binding a phone (CONTRACT §5)."""
from __future__ import annotations

import datetime
import logging
import secrets
from typing import Awaitable, Callable
from zoneinfo import ZoneInfo

from .errors import ApiError, bad_request
from .privacy import mask_phone
from .sms import SmsError, SmsSender
from .validation import mainland_mobile

log = logging.getLogger(__name__)

CODE_TTL = 300
RESEND_AFTER = 60
PER_DAY = 10
MAX_TRIES = 5


class VerificationCodes:
    """Six-digit codes in Redis: one per minute and ten per day per phone, five wrong tries void one."""

    def __init__(self, redis, sender: SmsSender, template: Callable[[], Awaitable[str]],
                 clock: Callable[[], float], tz: ZoneInfo):
        self.redis = redis
        self.sender = sender
        self.template = template
        self.clock = clock
        self.tz = tz

    @property
    def required(self) -> bool:
        """Whether bindings must present a code (not when SMS is off)."""
        return self.sender.enabled

    async def send(self, phone: str) -> None:
        """Send a new code to a mainland mobile; 429 when asked too often, 502 when SMS fails."""
        if not self.required:
            raise ApiError(400, "短信验证已关闭，绑定无需验证码")
        if mainland_mobile(phone) is None:
            raise bad_request("参数 phone 应为中国大陆手机号码")
        if not await self.redis.set(f"smscode:wait:{phone}", 1, nx=True, ex=RESEND_AFTER):
            raise ApiError(429, "验证码发送过于频繁，请 1 分钟后再试")
        day = datetime.datetime.fromtimestamp(self.clock(), self.tz).strftime("%Y%m%d")
        day_key = f"smscode:day:{day}:{phone}"
        count = await self.redis.incr(day_key)
        if count == 1:
            await self.redis.expire(day_key, 86400)
        if count > PER_DAY:
            raise ApiError(429, "今天的验证码发送次数已达上限，请明天再试")
        code = f"{secrets.randbelow(10**6):06d}"
        key = f"smscode:{phone}"
        await self.redis.delete(key)
        await self.redis.hset(key, mapping={"code": code, "tries": 0})
        await self.redis.expire(key, CODE_TTL)
        try:
            await self.sender.send(phone, await self.template(), {"code": code})
        except SmsError as exc:
            log.warning("verification SMS to %s failed: %s", mask_phone(phone), exc)
            await self.redis.delete(key, f"smscode:wait:{phone}")
            await self.redis.decr(day_key)
            raise ApiError(502, "短信发送失败，请稍后再试") from None

    async def check(self, phone: str, code: str | None) -> None:
        """400 unless `code` is the live code for `phone`; a wrong try counts, the fifth voids it."""
        if not self.required:
            return
        key = f"smscode:{phone}"
        stored = await self.redis.hget(key, "code")
        if stored and code and secrets.compare_digest(stored, code):
            return
        if stored and await self.redis.hincrby(key, "tries", 1) >= MAX_TRIES:
            await self.redis.delete(key)
        raise bad_request("验证码错误或已过期")

    async def consume(self, phone: str) -> None:
        """Use the code up (the binding it completed succeeded)."""
        await self.redis.delete(f"smscode:{phone}")
