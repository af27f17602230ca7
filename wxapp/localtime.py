"""Unix times as people in TIMEZONE read them, fast enough for long exports: the zone's offset is
looked up once per quarter of an hour, not once per value."""
from __future__ import annotations

import datetime
import functools
import time
from zoneinfo import ZoneInfo

_BUCKET = 900  # every zone changes its offset on a quarter-hour boundary


@functools.lru_cache(maxsize=8192)
def _offset(tz: ZoneInfo, bucket: int) -> int:
    return int(datetime.datetime.fromtimestamp(bucket * _BUCKET, tz).utcoffset().total_seconds())


def local_text(seconds: float | int | None, tz: ZoneInfo, *, with_seconds: bool = False, date_only: bool = False) -> str:
    """`YYYY-MM-DD HH:MM` (or with seconds, or the date alone) in `tz`; "" for none."""
    if not seconds:
        return ""
    whole = int(seconds)
    t = time.gmtime(whole + _offset(tz, whole // _BUCKET))
    text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    if date_only:
        return text
    text += f" {t.tm_hour:02d}:{t.tm_min:02d}"
    return text + f":{t.tm_sec:02d}" if with_seconds else text
