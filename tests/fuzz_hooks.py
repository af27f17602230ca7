"""Schemathesis hooks for tests/test_openapi_fuzz.py (loaded by the `st` process through SCHEMATHESIS_HOOKS).

They only supply what a valid request needs and the document cannot say, for positive cases:
- the SMS code a person would have received: the code a binding request carries is made the live
  code of its phone in Redis, as if it had been sent;
- a visit window that is still to come: `end_time` after `start_time` and in the future.
Negative cases are sent as generated."""
from __future__ import annotations

import datetime
import os
import time
import zoneinfo

import redis
import schemathesis

from wxapp.validation import normalize_phone, to_timestamp

_redis = redis.Redis.from_url(os.environ["FUZZ_REDIS_URL"]) if os.environ.get("FUZZ_REDIS_URL") else None
_TZ = zoneinfo.ZoneInfo(os.environ.get("TIMEZONE", "Asia/Shanghai"))
_BINDINGS = {("POST", "/v1/subject/binding"), ("POST", "/v1/visitor/binding")}


def _positive(case) -> bool:
    meta = case.meta
    return meta is None or meta.generation.mode.is_positive


def _epoch(value) -> int:
    moment = to_timestamp(value)
    if isinstance(moment, datetime.datetime):
        return int(moment.replace(tzinfo=_TZ).timestamp())
    return moment


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _positive(case) or not isinstance(case.body, dict):
        return
    key = (case.method.upper(), case.path)
    body = case.body
    if key in _BINDINGS and _redis is not None and isinstance(body.get("code"), str):
        phone = normalize_phone(body["phone"].strip())
        _redis.delete(f"smscode:{phone}")
        _redis.hset(f"smscode:{phone}", mapping={"code": body["code"], "tries": 0})
        _redis.expire(f"smscode:{phone}", 300)
    if key == ("POST", "/v1/subject") and "start_time" in body and "end_time" in body:
        start, end = _epoch(body["start_time"]), _epoch(body["end_time"])
        now = int(time.time())
        if not start < end or end <= now + 60:
            body["start_time"], body["end_time"] = now, now + 3600
