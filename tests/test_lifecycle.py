"""The course of a visit (CONTRACT §9): statuses, decline, cancel, check-out, the end of the window."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import ADMIN_KEY, GATE_KEY, KIOSK_KEY
from tests.test_visits import RETINUES, application
from wxapp.context import build_context

HOUR = 3600


@pytest.fixture
def visit(people, clock):
    """A visitor's application (two retinues) to the employee, in a window around now; returns
    (visitor, employee, record id)."""
    async def make(start_offset=-600, length=2 * HOUR):
        visitor, employee = await people()
        now = int(clock())
        resp = await visitor.fetch("/v1/subject", "POST", json=application(
            "13900000001", now + start_offset, now + start_offset + length, retinues=RETINUES))
        assert resp.json()["data"]["status"] == "pending"
        return visitor, employee, resp.json()["data"]["id"]
    return make


async def record(anonymous, rid) -> dict:
    found = [r for r in (await anonymous.fetch("/v1/visit/records?type=web&size=100", key=ADMIN_KEY)).json()["data"]
             if r["id"] == rid]
    assert found, f"record {rid} is not listed"
    return found[0]


async def events(ctx, rid) -> list[str]:
    return sorted(e["_id"] for e in await ctx.storage.db.outbox.find({"record_id": rid}).to_list(None))


async def sign_in(anonymous, phone="13900000001") -> dict:
    resp = await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": phone}, key=KIOSK_KEY)
    assert resp.json()["code"] == 0, resp
    return resp.json()["data"]


async def scan(anonymous, qrcode, direction=None) -> int:
    body = {"qrcode": qrcode, **({"direction": direction} if direction else {})}
    return (await anonymous.fetch("/v1/visit/qrcode", "POST", json=body, key=GATE_KEY)).json()["code"]


def everyone(data: dict) -> list[str]:
    return [data["qrcode"], *(p["qrcode"] for p in data["retinues"])]


@pytest.mark.gen_test
async def test_every_record_answer_carries_its_status_through_approval_and_sign_in(visit, anonymous, ctx):
    visitor, employee, rid = await visit()
    assert (await record(anonymous, rid))["status"] == "pending"
    assert (await employee.fetch(f"/v1/auth/{rid}", "PUT")).json()["code"] == 0
    assert (await record(anonymous, rid))["status"] == "approved"
    assert (await sign_in(anonymous))["status"] == "signed_in"
    mine = (await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001")).json()["data"]
    assert [r["status"] for r in mine] == ["signed_in"]


@pytest.mark.gen_test
async def test_the_interviewee_declines_with_a_reason_and_the_visitor_is_told_once(visit, anonymous, ctx, fakes):
    visitor, employee, rid = await visit()
    resp = await employee.fetch(f"/v1/auth/{rid}/decline", "POST", json={"reason": "当天出差"})
    assert resp.json()["code"] == 0, resp
    assert resp.json()["data"]["status"] == "declined"
    told = await events(ctx, rid)
    assert "decline_to_visitor:%d:sms" % rid in told and "decline_to_visitor:%d:wechat" % rid in told
    again = await employee.fetch(f"/v1/auth/{rid}/decline", "POST", json={"reason": "另有安排"})
    assert again.json()["code"] == 0 and again.json()["data"]["status"] == "declined"
    assert await events(ctx, rid) == told
    stored = await ctx.storage.db.records.find_one({"_id": rid})
    assert stored["decline_reason"] == "当天出差"
    # Declined is final: it can neither be approved nor cancelled, and the kiosk does not know it.
    approve = await employee.fetch(f"/v1/auth/{rid}", "PUT")
    assert (approve.status, approve.json()["err_msg"]) == (409, "该预约已拒绝，无法审批")
    cancel = await visitor.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert (cancel.status, cancel.json()["err_msg"]) == (409, "该预约已拒绝，无法取消")
    signin = await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert signin.status == 404


@pytest.mark.gen_test
async def test_only_the_interviewee_or_an_admin_may_decline(visit, bind_employee, anonymous):
    _, _, rid = await visit()
    other = await bind_employee("o-e2", "王经理", "13800000003", "财务部")
    resp = await other.fetch(f"/v1/auth/{rid}/decline", "POST", json={})
    assert (resp.status, resp.json()["code"]) == (403, 403)
    admin = await anonymous.fetch(f"/v1/auth/{rid}/decline", "POST", json={}, key=ADMIN_KEY)
    assert admin.json()["data"]["status"] == "declined"


@pytest.mark.gen_test
async def test_a_signed_in_visit_can_be_neither_declined_nor_cancelled(visit, anonymous):
    visitor, employee, rid = await visit()
    await employee.fetch(f"/v1/auth/{rid}", "PUT")
    data = await sign_in(anonymous)
    decline = await employee.fetch(f"/v1/auth/{rid}/decline", "POST", json={})
    assert (decline.status, decline.json()["err_msg"]) == (409, "该预约已签到，无法拒绝")
    cancel = await visitor.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert (cancel.status, cancel.json()["err_msg"]) == (409, "该预约已签到，无法取消")
    assert all([await scan(anonymous, q) == 0 for q in everyone(data)])


@pytest.mark.gen_test
async def test_the_visitor_cancels_and_the_employee_is_told(visit, anonymous, ctx):
    visitor, employee, rid = await visit()
    await employee.fetch(f"/v1/auth/{rid}", "PUT")
    resp = await visitor.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert resp.json()["data"]["status"] == "cancelled"
    assert "cancel_to_employee:%d:sms" % rid in await events(ctx, rid)
    assert "cancel_to_visitor:%d:sms" % rid not in await events(ctx, rid)
    signin = await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert signin.status == 404
    decline = await employee.fetch(f"/v1/auth/{rid}/decline", "POST", json={})
    assert (decline.status, decline.json()["err_msg"]) == (409, "该预约已取消，无法拒绝")


@pytest.mark.gen_test
async def test_an_employee_cancels_an_own_invitation_and_the_visitor_is_told(people, clock, ctx, bind_visitor):
    visitor, employee = await people()
    now = int(clock())
    invite = await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, proposer="13800000002"))
    rid = invite.json()["data"]["id"]
    assert invite.json()["data"]["status"] == "approved"
    refused = await visitor.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert (refused.status, refused.json()["code"]) == (403, 403)
    resp = await employee.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert resp.json()["data"]["status"] == "cancelled"
    assert "cancel_to_visitor:%d:sms" % rid in await events(ctx, rid)


@pytest.mark.gen_test
async def test_kiosk_sign_out_closes_the_gate_for_entry_but_not_for_leaving(visit, anonymous, fakes, ctx):
    visitor, employee, rid = await visit()
    refused = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert (refused.status, refused.json()["err_msg"]) == (404, "今天没有已签到的来访")
    await employee.fetch(f"/v1/auth/{rid}", "PUT")
    data = await sign_in(anonymous)
    assert len(fakes.koala.visitors()) == 3
    resp = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13700000012"}, key=KIOSK_KEY)
    assert resp.json()["code"] == 0, resp
    assert resp.json()["data"]["status"] == "checked_out"
    for qrcode in everyone(data):
        assert await scan(anonymous, qrcode) == -209
        assert await scan(anonymous, qrcode, "out") == 0
    assert await scan(anonymous, json.dumps({"id": rid, "qrcode": "unknownTokenUnknown00"}), "out") == -201
    assert fakes.koala.visitors() == []
    again = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert again.json()["code"] == 0 and again.json()["data"]["status"] == "checked_out"


@pytest.mark.gen_test
async def test_the_visit_checks_out_when_everyone_has_left_through_a_gate(visit, anonymous, ctx):
    _, employee, rid = await visit()
    await employee.fetch(f"/v1/auth/{rid}", "PUT")
    data = await sign_in(anonymous)
    codes = everyone(data)
    for qrcode in codes[:-1]:
        assert await scan(anonymous, qrcode, "out") == 0
    await asyncio.sleep(0.3)
    assert (await record(anonymous, rid))["status"] == "signed_in"
    assert await scan(anonymous, codes[-1], "out") == 0
    for _ in range(50):
        if (await record(anonymous, rid))["status"] == "checked_out":
            break
        await asyncio.sleep(0.1)
    assert (await record(anonymous, rid))["status"] == "checked_out"
    assert await scan(anonymous, codes[0]) == -209


@pytest.mark.gen_test
async def test_the_end_of_the_window_ends_every_open_visit_once_with_two_processes(
        people, clock, anonymous, ctx, config, fakes):
    visitor, employee = await people()
    now = int(clock())
    ids = []
    for offset in (0, 1, 2):
        resp = await visitor.fetch("/v1/subject", "POST", json=application(
            "13900000001", now - 600 + offset, now + HOUR + offset))
        ids.append(resp.json()["data"]["id"])
    pending, approved, signed = ids
    await employee.fetch(f"/v1/auth/{approved}", "PUT")
    await employee.fetch(f"/v1/auth/{signed}", "PUT")
    data = await sign_in(anonymous)
    assert data["id"] == approved  # the earliest approved visit of today: sign in the other one too
    await ctx.visits.end_visits()  # nothing is over yet
    assert (await record(anonymous, pending))["status"] == "pending"
    clock.advance(2 * HOUR)
    # The status reads as ended at once, before the job has written it.
    assert (await record(anonymous, pending))["status"] == "expired"
    process = await build_context(config, clock=clock)
    try:
        moved = await asyncio.gather(ctx.visits.end_visits(), process.services.visits.end_visits())
    finally:
        await process.close()
    assert sum(moved) == 3
    stored = {r["_id"]: r["status"] for r in await ctx.storage.db.records.find({}).to_list(None)}
    assert stored == {pending: "expired", approved: "checked_out", signed: "no_show"}
    assert fakes.koala.visitors() == []
    assert await scan(anonymous, data["qrcode"]) == -209
    # An expired application leaves the employee's approval list.
    waiting = (await employee.fetch("/v1/auth/records?status=pending")).json()
    assert waiting["code"] == 0 and waiting["data"] == []


@pytest.mark.gen_test
async def test_records_lists_filter_by_one_status_or_several(visit, anonymous, bind_visitor, clock):
    visitor, employee, first = await visit()
    now = int(clock())
    second = (await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR))).json()["data"]["id"]
    await employee.fetch(f"/v1/auth/{first}/decline", "POST", json={})

    async def listed(query):
        resp = await anonymous.fetch(f"/v1/visit/records?type=web&{query}", key=ADMIN_KEY)
        assert resp.json()["code"] == 0, resp
        return sorted(r["id"] for r in resp.json()["data"])

    assert await listed("status=declined") == [first]
    assert await listed("status=pending") == [second]
    assert await listed("status=pending,declined") == sorted([first, second])
    bad = await anonymous.fetch("/v1/visit/records?type=web&status=gone", key=ADMIN_KEY)
    assert (bad.status, bad.json()["code"]) == (400, 400)
