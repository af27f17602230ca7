"""Delivering notifications: each event reaches the right person on both channels, exactly once."""
import asyncio
from collections import Counter

import pytest

from tests.conftest import ADMIN_KEY, TEMPLATE_IDS
from tests.test_visits import application
from wxapp.context import build_context
from wxapp.delivery import DeliveryWorker

HOUR = 3600


def messages(fakes):
    """(channel, recipient, template) of everything the local WeChat and SMS servers received,
    leaving out the binding codes."""
    wechat = [("wechat", m["touser"], m["template_id"]) for m in fakes.wechat.templates_sent]
    sms = [("sms", m["phone"], m["template_code"]) for m in fakes.sms.sent if m["template_code"] != "SMS_CODE"]
    return wechat + sms


@pytest.mark.gen_test
async def test_each_event_reaches_the_right_person_on_both_channels_once(journey, ctx, fakes):
    await journey()
    assert await ctx.delivery.run_once() == 8
    assert sorted(messages(fakes)) == sorted([
        ("wechat", "o-e1", TEMPLATE_IDS["approval_reminder_to_employee_wechat_id"]),
        ("sms", "13800000002", TEMPLATE_IDS["approval_reminder_to_employee_sms_id"]),
        ("wechat", "o-v1", TEMPLATE_IDS["approval_pass_to_visitor_wechat_id"]),
        ("sms", "13900000001", TEMPLATE_IDS["approval_pass_to_visitor_sms_id"]),
        ("wechat", "o-v1", TEMPLATE_IDS["signin_to_visitor_wechat_id"]),
        ("sms", "13900000001", TEMPLATE_IDS["signin_to_visitor_sms_id"]),
        ("wechat", "o-e1", TEMPLATE_IDS["visitor_signin_to_employee_wechat_id"]),
        ("sms", "13800000002", TEMPLATE_IDS["visitor_signin_to_employee_sms_id"]),
    ])
    assert await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 8
    assert await ctx.delivery.run_once() == 0
    assert len(messages(fakes)) == 8
    assert fakes.wechat.tokens_issued == 1  # one access token, kept in Redis


@pytest.mark.gen_test
async def test_message_content_links_to_the_h5_pages(journey, ctx, fakes):
    rid = await journey()
    await ctx.delivery.run_once()
    by_template = {m["template_id"]: m for m in fakes.wechat.templates_sent}
    signin = by_template[TEMPLATE_IDS["signin_to_visitor_wechat_id"]]
    assert signin["url"] == f"https://visit.example.com/h5/records/{rid}"
    assert signin["data"]["keyword1"] == {"value": "张三"}
    assert signin["data"]["keyword2"] == {"value": "李经理"}
    assert signin["data"]["keyword4"] == {"value": "已签到"}
    reminder = by_template[TEMPLATE_IDS["approval_reminder_to_employee_wechat_id"]]
    assert reminder["url"] == "https://visit.example.com/h5/approvals"
    assert reminder["data"]["keyword2"] == {"value": "13900000001"}
    sms = {m["template_code"]: m["params"] for m in fakes.sms.sent}
    visitor_signin = sms[TEMPLATE_IDS["signin_to_visitor_sms_id"]]
    assert set(visitor_signin) == {"name", "time", "url"}
    assert visitor_signin["url"] == f"https://visit.example.com/h5/records/{rid}"
    assert len(visitor_signin["time"]) == len("2026-01-01 09:00")
    assert set(sms[TEMPLATE_IDS["approval_pass_to_visitor_sms_id"]]) == {"name", "time"}


@pytest.mark.gen_test
async def test_the_field_mapping_shapes_category_templates_and_cuts_long_values(journey, ctx, fakes, anonymous):
    templates = await ctx.system_settings.templates()
    await ctx.system_settings.save_templates({**templates, "wechat_fields": {
        "approval_reminder_to_employee": {"thing1": "come_from", "time2": "start_time", "phone_number3": "visitor_phone"}}})
    await journey(sign_in=False)
    await ctx.storage.db.records.update_many({}, {"$set": {"come_from": "一家名字非常非常非常非常非常长的科技有限公司北京分公司"}})
    await ctx.delivery.run_once()
    reminder = next(m for m in fakes.wechat.templates_sent
                    if m["template_id"] == TEMPLATE_IDS["approval_reminder_to_employee_wechat_id"])
    assert set(reminder["data"]) == {"thing1", "time2", "phone_number3"}
    assert reminder["data"]["thing1"]["value"] == "一家名字非常非常非常非常非常长的科技有限公司北京分公司"[:20]
    assert reminder["data"]["phone_number3"]["value"] == "13900000001"


@pytest.mark.gen_test
async def test_a_channel_without_a_template_is_skipped(journey, ctx, fakes):
    templates = await ctx.system_settings.templates()
    await ctx.system_settings.save_templates({**templates, "approval_pass_to_visitor_wechat_id": ""})
    await journey(sign_in=False)
    await ctx.delivery.run_once()
    skipped = await ctx.storage.db.outbox.find_one({"event": "approval_pass_to_visitor", "channel": "wechat"})
    assert skipped["status"] == "skipped"
    assert ("wechat", "o-v1", "") not in messages(fakes)


@pytest.mark.gen_test
async def test_a_wechat_outage_delays_messages_and_loses_none(journey, ctx, fakes, clock):
    await journey()
    fakes.wechat.fail_next(100, status=503)
    await ctx.delivery.run_once()
    assert fakes.wechat.templates_sent == []
    pending = await ctx.storage.db.outbox.find({"channel": "wechat"}).to_list(None)
    assert {p["status"] for p in pending} == {"pending"}
    assert all(p["due_at"] > clock() for p in pending) and all(p["last_error"] for p in pending)
    clock.advance(10)
    await ctx.delivery.run_once()  # still down: the second try waits longer
    fakes.wechat.reset()
    clock.advance(60)
    await ctx.delivery.run_once()
    assert Counter(m["template_id"] for m in fakes.wechat.templates_sent) == Counter(
        {TEMPLATE_IDS[f"{e}_wechat_id"]: 1 for e in
         ("approval_reminder_to_employee", "approval_pass_to_visitor", "signin_to_visitor",
          "visitor_signin_to_employee")})
    assert await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 8


@pytest.mark.gen_test
async def test_sms_throttling_is_retried(journey, ctx, fakes, clock):
    await journey(sign_in=False)
    fakes.sms.fail_next_with("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控", times=2)
    await ctx.delivery.run_once()
    clock.advance(3600)
    await ctx.delivery.run_once()
    assert await ctx.storage.db.outbox.count_documents({"channel": "sms", "status": "sent"}) == 2


@pytest.mark.gen_test
async def test_a_user_who_unsubscribed_is_not_retried(journey, ctx, fakes, clock):
    await journey(sign_in=False)
    fakes.wechat.fail_template(43004, "require subscribe", times=10, openid="o-v1")
    await ctx.delivery.run_once()
    failed = await ctx.storage.db.outbox.find_one({"event": "approval_pass_to_visitor", "channel": "wechat"})
    assert failed["status"] == "failed" and "43004" in failed["last_error"]
    clock.advance(7200)
    assert await ctx.delivery.run_once() == 0
    assert (await ctx.storage.db.outbox.find_one({"_id": failed["_id"]}))["attempts"] == 1
    assert not [m for m in fakes.wechat.templates_sent if m["touser"] == "o-v1"]


@pytest.mark.gen_test
async def test_an_invalid_phone_is_a_permanent_sms_failure(bind_employee, ctx, fakes, clock):
    employee = await bind_employee("o-e1", "李经理", "13800000002")
    now = int(clock())
    await employee.fetch("/v1/subject", "POST", json=application(
        "+14155550100", now + 60, now + HOUR, proposer="13800000002"))
    await ctx.delivery.run_once()
    entry = await ctx.storage.db.outbox.find_one({"channel": "sms"})
    assert entry["status"] == "failed" and "MOBILE_NUMBER_ILLEGAL" in entry["last_error"]


@pytest.mark.gen_test
async def test_two_workers_on_one_outbox_send_each_message_once(journey, ctx, fakes):
    await journey()
    other = DeliveryWorker(ctx.outbox, ctx.visits, ctx.system_settings, ctx.wechat, ctx.sms, ctx.clock, ctx.config.tz)
    fakes.wechat.delay = 0.02
    counts = await asyncio.gather(ctx.delivery.run_once(), other.run_once())
    assert sum(counts) == 8
    assert len(messages(fakes)) == len(set(messages(fakes))) == 8


@pytest.mark.gen_test
async def test_an_entry_left_by_a_dead_worker_is_sent_when_its_lease_ends(journey, ctx, fakes, clock):
    await journey(sign_in=False)
    dead = DeliveryWorker(ctx.outbox, ctx.visits, ctx.system_settings, ctx.wechat, ctx.sms, ctx.clock, ctx.config.tz)
    claimed = await dead.claim()  # claimed, then the process was killed before sending
    await ctx.delivery.run_once()
    assert await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 3
    clock.advance(61)
    assert await ctx.delivery.run_once() == 1
    assert (await ctx.storage.db.outbox.find_one({"_id": claimed["_id"]}))["status"] == "sent"
    assert len(messages(fakes)) == 4


@pytest.mark.gen_test
async def test_notifications_of_a_deleted_record_are_cancelled(journey, ctx, fakes, anonymous):
    rid = await journey(sign_in=False)
    await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
    assert await ctx.delivery.run_once() == 0
    assert messages(fakes) == []


@pytest.mark.gen_test
async def test_a_restarted_server_delivers_what_was_pending(journey, ctx, config, fakes, clock):
    await journey()  # the server stops before its worker ran
    restarted = await build_context(config, clock=clock)
    restarted.background.start()
    try:
        for _ in range(100):
            if len(messages(fakes)) == 8:
                break
            await asyncio.sleep(0.1)
    finally:
        await restarted.close()
    assert len(messages(fakes)) == len(set(messages(fakes))) == 8


@pytest.mark.gen_test(timeout=60)
async def test_a_written_notification_wakes_the_delivery_worker_before_its_next_poll(journey, ctx, background, fakes):
    ctx.delivery.poll = 30.0  # without the outbox's wake-up, nothing would be sent within the test
    background.start()
    await asyncio.sleep(0.2)  # the worker found nothing and waits
    await journey()
    for _ in range(100):
        if len(messages(fakes)) == 8:
            break
        await asyncio.sleep(0.1)
    assert len(messages(fakes)) == 8


def worker(ctx, **kwargs) -> DeliveryWorker:
    """Another delivery worker on the same outbox, as another server process runs one."""
    return DeliveryWorker(ctx.outbox, ctx.visits, ctx.system_settings, ctx.wechat, ctx.sms, ctx.clock, ctx.config.tz,
                          **kwargs)


def template_requests(fakes) -> list[str]:
    """The template id of every template message the local WeChat received, answered or not."""
    return [r["json"]["template_id"] for r in fakes.wechat.requests_to("/cgi-bin/message/template/send")]


@pytest.mark.gen_test(timeout=20)
async def test_a_send_slower_than_its_lease_is_not_taken_by_another_worker(journey, ctx, fakes):
    await journey(sign_in=False)
    slow, other = worker(ctx, lease=0.3), worker(ctx, lease=0.3)
    fakes.wechat.delay = 1.2
    entry = await slow.claim("wechat")
    sending = asyncio.ensure_future(slow.deliver(entry))
    await asyncio.sleep(0.7)  # more than twice the lease
    claimed = [await other.claim("wechat") for _ in range(3)]
    assert entry["_id"] not in [c["_id"] for c in claimed if c]
    await sending
    assert (await ctx.storage.db.outbox.find_one({"_id": entry["_id"]}))["status"] == "sent"
    await asyncio.sleep(1.3)  # whatever `other` claimed has arrived too
    assert Counter(template_requests(fakes))[TEMPLATE_IDS[f"{entry['event']}_wechat_id"]] == 1


@pytest.mark.gen_test(timeout=20)
async def test_a_worker_does_not_take_again_what_it_is_sending(journey, ctx, fakes):
    await journey(sign_in=False)
    slow = worker(ctx, lease=0.3)
    fakes.wechat.delay = 1.2
    first = asyncio.ensure_future(slow.run_once())
    await asyncio.sleep(0.7)
    second = asyncio.ensure_future(slow.run_once())
    await asyncio.gather(first, second)
    assert len(template_requests(fakes)) == len(set(template_requests(fakes))) == 2
    assert await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 4


@pytest.mark.gen_test
async def test_a_worker_never_sends_again_what_it_sent_when_the_outcome_was_lost(journey, ctx, fakes, clock):
    await journey(sign_in=False)
    assert await ctx.delivery.run_once() == 4
    # The database lost the outcome writes (as a store without durable writes does on a crash):
    # the entries look claimed by this worker, with leases that ran out.
    await ctx.storage.db.outbox.update_many({}, {"$set": {"status": "sending", "due_at": clock() - 1,
                                                      "lease_owner": ctx.delivery.owner}})
    assert await ctx.delivery.run_once() == 4
    assert len(messages(fakes)) == 4
    assert await ctx.storage.db.outbox.count_documents({"status": "sent"}) == 4


@pytest.mark.gen_test(timeout=20)
async def test_a_slow_wechat_does_not_hold_up_sms(journey, ctx, fakes):
    await journey(sign_in=False)
    fakes.wechat.delay = 1.0
    delivering = asyncio.ensure_future(ctx.delivery.run_once())
    await asyncio.sleep(0.6)
    assert len([m for m in messages(fakes) if m[0] == "sms"]) == 2
    assert fakes.wechat.templates_sent == []
    assert await delivering == 4
    assert len(messages(fakes)) == 4
