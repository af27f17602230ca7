"""The morning reminder (CONTRACT §9): on the day of an approved visit at `reminder_hour` in TIMEZONE,
once per visit however many processes run the job."""
from __future__ import annotations

import asyncio
import datetime

import pytest

from tests.conftest import ADMIN_KEY
from wxapp.context import build_context

HOUR = 3600
EVENT = "visit_reminder_to_visitor"


def at(ctx, day: datetime.date, hour: int, minute: int = 0) -> int:
    """A moment of a calendar day in the configured time zone."""
    return int(datetime.datetime.combine(day, datetime.time(hour, minute), ctx.config.tz).timestamp())


@pytest.fixture
def morning(bind_visitor, bind_employee, clock, ctx):
    """At 07:00 tomorrow (TIMEZONE): a bound employee and visitor, and `book(start_hour)` to apply for a
    visit that day; returns (book, visitor, employee, day)."""
    async def make():
        day = datetime.datetime.fromtimestamp(clock(), ctx.config.tz).date() + datetime.timedelta(days=1)
        clock.advance(at(ctx, day, 7) - clock())
        employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
        visitor = await bind_visitor("o-v1", "13900000001")

        async def book(start_hour: int) -> int:
            resp = await visitor.fetch("/v1/subject", "POST", json={
                "subject_type": 1, "name": "张三", "phone": "13900000001", "proposer": "13900000001",
                "interviewee": "李经理", "interviewee_phone": "13800000002",
                "start_time": at(ctx, day, start_hour), "end_time": at(ctx, day, start_hour + 2),
                "purpose": 2, "come_from": "星辰科技"})
            assert resp.json()["code"] == 0, resp
            return resp.json()["data"]["id"]
        return book, visitor, employee, day
    return make


async def reminders(ctx) -> list[str]:
    return sorted(e["_id"] for e in await ctx.storage.db.outbox.find({"event": EVENT}).to_list(None))


@pytest.mark.gen_test
async def test_the_reminder_goes_out_once_at_the_hour_and_not_before(morning, ctx, clock, fakes):
    book, visitor, employee, day = await morning()
    rid = await book(10)
    assert (await employee.fetch(f"/v1/auth/{rid}", "PUT")).json()["code"] == 0
    await ctx.delivery.run_once()  # the application's and the approval's messages
    fakes.wechat.templates_sent.clear()
    fakes.sms.sent.clear()
    clock.advance(at(ctx, day, 7, 59) - clock())
    assert await ctx.reminders.run() == 0
    assert await reminders(ctx) == []
    clock.advance(at(ctx, day, 8, 0) - clock())
    assert await ctx.reminders.run() == 1
    assert await reminders(ctx) == [f"{EVENT}:{rid}:sms", f"{EVENT}:{rid}:wechat"]
    clock.advance(HOUR)
    assert await ctx.reminders.run() == 0  # once
    await ctx.delivery.run_once()
    assert [m["touser"] for m in fakes.wechat.templates_sent] == ["o-v1"]
    assert [m["phone"] for m in fakes.sms.sent] == ["13900000001"]
    assert fakes.sms.sent[0]["template_code"] == f"TPL_{EVENT}_sms_id"


@pytest.mark.gen_test
async def test_the_reminder_hour_is_the_template_setting(morning, ctx, clock, anonymous):
    book, visitor, employee, day = await morning()
    rid = await book(14)
    await employee.fetch(f"/v1/auth/{rid}", "PUT")
    templates = await ctx.system_settings.templates()
    saved = await anonymous.fetch("/v1/config/templates", "PUT", key=ADMIN_KEY, json={
        **{k: v for k, v in templates.items() if k != "wechat_fields"}, "reminder_hour": 11})
    assert saved.json()["code"] == 0, saved
    clock.advance(at(ctx, day, 10, 30) - clock())
    assert await ctx.reminders.run() == 0
    clock.advance(at(ctx, day, 11, 0) - clock())
    assert await ctx.reminders.run() == 1


@pytest.mark.gen_test
async def test_no_reminder_for_pending_declined_cancelled_other_days_or_late_bookings(morning, ctx, clock):
    book, visitor, employee, day = await morning()
    pending = await book(9)
    declined = await book(10)
    cancelled = await book(11)
    other_day = await book(13)
    for rid in (declined, cancelled):
        await employee.fetch(f"/v1/auth/{rid}", "PUT")
    await employee.fetch(f"/v1/auth/{declined}/decline", "POST", json={"reason": "出差"})
    assert (await visitor.fetch(f"/v1/visit/records/{cancelled}/cancel", "POST")).json()["code"] == 0
    await ctx.storage.db.records.update_one(  # a visit of the next day, approved
        {"_id": other_day}, {"$inc": {"start_time": 86400, "end_time": 86400}})
    await employee.fetch(f"/v1/auth/{other_day}", "PUT")
    clock.advance(at(ctx, day, 8, 30) - clock())
    booked_late = await book(15)  # booked after the reminder hour: its approval was the reminder
    await employee.fetch(f"/v1/auth/{booked_late}", "PUT")
    assert await ctx.reminders.run() == 0
    assert await reminders(ctx) == []
    assert pending


@pytest.mark.gen_test
async def test_two_processes_send_each_reminder_once(morning, ctx, clock, config):
    book, visitor, employee, day = await morning()
    ids = [await book(9 + n) for n in range(5)]
    for rid in ids:
        await employee.fetch(f"/v1/auth/{rid}", "PUT")
    clock.advance(at(ctx, day, 8, 5) - clock())
    process = await build_context(config, clock=clock)
    try:
        done = await asyncio.gather(ctx.reminders.run(), process.services.reminders.run(), ctx.reminders.run())
    finally:
        await process.close()
    assert sum(done) == 5
    assert len(await reminders(ctx)) == 10  # WeChat and SMS for each visit
    stored = await ctx.storage.db.records.find({"reminded_at": {"$exists": True}}).to_list(None)
    assert sorted(r["_id"] for r in stored) == ids
