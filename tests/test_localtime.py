"""Times in exports read exactly as datetime would write them, in zones with and without DST."""
import datetime
import random
from zoneinfo import ZoneInfo

import pytest

from wxapp.localtime import local_text


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])
def test_local_text_agrees_with_datetime_around_every_offset_change(zone):
    tz = ZoneInfo(zone)
    rng = random.Random(7)
    moments = [rng.randrange(1_600_000_000, 1_900_000_000) for _ in range(3000)]
    # Every second around the 2026 DST changes of New York and Lord Howe, too.
    for change in (1773558000, 1793512800, 1775318400, 1791043200):
        moments += range(change - 3, change + 3)
    for seconds in moments:
        moment = datetime.datetime.fromtimestamp(seconds, tz)
        assert local_text(seconds, tz) == moment.strftime("%Y-%m-%d %H:%M"), seconds
        assert local_text(seconds, tz, with_seconds=True) == moment.strftime("%Y-%m-%d %H:%M:%S")
        assert local_text(seconds, tz, date_only=True) == moment.strftime("%Y-%m-%d")
    assert local_text(0, tz) == local_text(None, tz) == ""
