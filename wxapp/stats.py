"""The numbers on the admin's start page: today at a glance and the last days, per calendar day in TIMEZONE."""
from __future__ import annotations

import dataclasses
import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from . import lifecycle
from .gate import PassLog
from .visits import Visits, day_bounds

_FIELDS = {"start_time": 1, "end_time": 1, "signin_time": 1, "is_auth": 1, "status": 1, "retinues.name": 1}


@dataclasses.dataclass
class Day:
    """One calendar day."""

    start: int  # Unix time the day begins
    label: str  # as the chart shows it: 11-29
    expected: int = 0  # visits whose time overlaps the day, unless declined or cancelled
    pending: int = 0  # of those, still awaiting approval
    signed_in: int = 0  # visits signed in at a kiosk that day
    people_signed_in: int = 0  # the people of those visits (visitor and retinues)
    people_passed: int = 0  # distinct people let through a gate that day


@dataclasses.dataclass
class Today(Day):
    on_site: int = 0  # people inside now: their last scan today let them in, their visit is still signed in


class Stats:
    """Counts read from the records and the gate log (both indexed by time)."""

    def __init__(self, visits: Visits, pass_log: PassLog, clock: Callable[[], float], tz: ZoneInfo):
        self.visits = visits
        self.pass_log = pass_log
        self.clock = clock
        self.tz = tz

    def _bounds(self, days: int) -> list[tuple[int, int]]:
        """When each of the last `days` days begins and ends, oldest first, today last."""
        today = datetime.datetime.fromtimestamp(self.clock(), self.tz).date()
        return [day_bounds(today - datetime.timedelta(days=n), self.tz) for n in range(days - 1, -1, -1)]

    async def days(self, days: int = 7) -> tuple[Today, list[Day]]:
        """Today's figures and those of the last `days` days (today included, oldest first)."""
        starts, ends = (list(column) for column in zip(*self._bounds(days)))
        result = [Day(start, datetime.datetime.fromtimestamp(start, self.tz).strftime("%m-%d")) for start in starts]
        now = self.clock()
        query = self.visits.filters({"start_time": starts[0], "end_time": ends[-1]})
        inside: set[int] = set()  # records whose visit is signed in now (not checked out, not over)
        async for record in self.visits.each(query, _FIELDS):
            people = 1 + len(record.get("retinues", []))
            if lifecycle.effective(record, now) == lifecycle.SIGNED_IN:
                inside.add(record["_id"])
            # A declined or cancelled visit is not expected any more.
            called_off = lifecycle.status_of(record) in (lifecycle.DECLINED, lifecycle.CANCELLED)
            for day, start, end in zip(result, starts, ends):
                if record["start_time"] < end and record["end_time"] > start and not called_off:
                    day.expected += 1
                    day.pending += 0 if record["is_auth"] else 1
                if start <= record["signin_time"] < end:
                    day.signed_in += 1
                    day.people_signed_in += people
        passed: list[set] = [set() for _ in starts]
        last_scan: dict[tuple, tuple[float, str]] = {}  # person -> (time, direction) of today's last pass
        async for entry in self.pass_log.during(starts[0], ends[-1]):
            if entry["code"] != 0:
                continue
            person = (entry["record_id"], entry["person"])
            for n in range(len(starts) - 1, -1, -1):
                if entry["time"] >= starts[n]:
                    passed[n].add(person)
                    break
            if entry["time"] >= starts[-1] and entry["time"] >= last_scan.get(person, (0, ""))[0]:
                last_scan[person] = (entry["time"], entry.get("direction", "in"))
        for day, people in zip(result, passed):
            day.people_passed = len(people)
        today = Today(**dataclasses.asdict(result[-1]))
        today.on_site = sum(1 for (record_id, _), (_, direction) in last_scan.items()
                            if direction == "in" and record_id in inside)
        return today, result
