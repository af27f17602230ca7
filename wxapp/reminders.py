"""The morning reminder (CONTRACT §9): `visit_reminder_to_visitor` on the day of an approved visit, at
`reminder_hour` in TIMEZONE, once per visit however many processes run the job.

The reminder is noted on the record (`reminded_at`) by the same conditional update that queues its
notification (`pending_events`, the outbox rule of §6), so only one process's update can succeed
and the note survives restarts; the outbox ids make each message unique besides."""
from __future__ import annotations

import datetime
import logging
from typing import Callable
from zoneinfo import ZoneInfo

from . import lifecycle
from .outbox import Outbox
from .storage import Storage
from .system_settings import SystemSettings
from .visits import day_bounds

log = logging.getLogger(__name__)

EVENT = "visit_reminder_to_visitor"


class Reminders:
    """Queues the reminders that are due; run by every process's periodic loop."""

    def __init__(self, storage: Storage, settings: SystemSettings, outbox: Outbox, clock: Callable[[], float],
                 tz: ZoneInfo):
        self.storage = storage
        self.settings = settings
        self.outbox = outbox
        self.clock = clock
        self.tz = tz

    async def run(self) -> int:
        """Remind the visitors of today's approved visits once `reminder_hour` has come; how many this
        call reminded. A visit booked after that hour, or already over, gets none: its approval
        message was the reminder, or it is too late."""
        now = self.clock()
        today = datetime.datetime.fromtimestamp(now, self.tz).date()
        hour = (await self.settings.templates())["reminder_hour"]
        moment = datetime.datetime.combine(today, datetime.time(hour), self.tz).timestamp()
        if now < moment:
            return 0
        day_start, day_end = day_bounds(today, self.tz)
        due = self.storage.records.each(
            {"status": lifecycle.APPROVED, "start_time": {"$gte": day_start, "$lt": day_end}},
            {"end_time": 1, "create_time": 1, "reminded_at": 1})
        reminded = 0
        async for record in due:
            if record.get("reminded_at") or record["end_time"] <= now or record.get("create_time", 0) > moment:
                continue
            updated = await self.storage.records.find_one_and_update(
                {"_id": record["_id"], "status": lifecycle.APPROVED, "reminded_at": {"$exists": False}},
                {"$set": {"reminded_at": int(now)}, "$push": {"pending_events": EVENT}}, projection={"_id": 1})
            if updated is not None:
                await self.outbox.materialize(record["_id"])
                reminded += 1
        if reminded:
            log.info("reminded the visitors of %d visits today", reminded)
        return reminded
