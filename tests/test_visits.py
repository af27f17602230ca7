"""Applications, invitations, record lists and authorization (seed H5 3, 5, 6, 7; CONTRACT §5, §6)."""
import base64
import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.base import make_jpeg

HOUR = 3600
RETINUES = [{"name": "随行一", "phone": "13700000011"}, {"name": "随行二", "phone": "13700000012"}]


def application(visitor_phone, start, end, *, interviewee="李经理", interviewee_phone="13800000002",
                proposer=None, name="张三", retinues=(), **extra):
    return {"subject_type": 1, "name": name, "phone": visitor_phone, "proposer": proposer or visitor_phone,
            "interviewee": interviewee, "interviewee_phone": interviewee_phone, "start_time": start,
            "end_time": end, "purpose": 2, "come_from": "星辰科技", "retinues": list(retinues), **extra}


async def outbox(ctx):
    return sorted(doc["_id"] for doc in await ctx.storage.db.outbox.find({}).to_list(None))


@pytest.mark.gen_test
async def test_visitor_applies_with_two_retinues_and_the_employee_is_reminded(people, clock, ctx):
    visitor, employee = await people()
    now = int(clock())
    resp = await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 3 * HOUR, retinues=RETINUES, remark="带样品"))
    assert resp.status == 200, resp
    data = resp.json()["data"]
    assert isinstance(data["id"], int)
    assert data["is_auth"] == 0 and data["signin_time"] == 0 and data["subject_id"] == 0
    assert (data["name"], data["phone"], data["proposer"]) == ("张三", "13900000001", "13900000001")
    assert (data["interviewee"], data["department"], data["purpose"]) == ("李经理", "市场部", 2)
    assert (data["start_time"], data["end_time"], data["remark"]) == (now + HOUR, now + 3 * HOUR, "带样品")
    assert data["qrcode"] == "" and data["qrcode_img_url"] == ""
    assert [(r["name"], r["phone"], r["subject_id"], r["qrcode"]) for r in data["retinues"]] == [
        ("随行一", "13700000011", 0, ""), ("随行二", "13700000012", 0, "")]
    rid = data["id"]
    assert await outbox(ctx) == [f"approval_reminder_to_employee:{rid}:sms",
                                 f"approval_reminder_to_employee:{rid}:wechat"]
    wechat = await ctx.storage.db.outbox.find_one({"_id": f"approval_reminder_to_employee:{rid}:wechat"})
    assert wechat["to"] == "o-e1" and wechat["status"] == "pending"


@pytest.mark.gen_test
async def test_an_interviewee_known_only_to_koala_is_accepted_and_reminded_by_sms(bind_visitor, fakes, clock, ctx):
    fakes.koala.add_employee("王总", "13800000077", department="总经办")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    resp = await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, interviewee="王总", interviewee_phone="13800000077"))
    assert resp.json()["data"]["department"] == "总经办"
    assert await outbox(ctx) == [f"approval_reminder_to_employee:{resp.json()['data']['id']}:sms"]


@pytest.mark.gen_test
async def test_an_unknown_interviewee_is_404_and_nothing_is_stored(bind_visitor, clock, ctx):
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    resp = await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, interviewee="无此人", interviewee_phone="13800009999"))
    assert resp.status == 404
    assert "被访员工" in resp.json()["err_msg"]
    assert await ctx.storage.db.records.count_documents({}) == 0


@pytest.mark.parametrize("field", ["proposer", "phone"])
@pytest.mark.gen_test
async def test_a_visitor_applies_only_with_their_own_phone(people, clock, field):
    visitor, _ = await people()
    now = int(clock())
    body = application("13900000001", now + HOUR, now + 2 * HOUR)
    body[field] = "13900000099"
    resp = await visitor.fetch("/v1/subject", "POST", json=body)
    assert resp.status == 403


@pytest.mark.gen_test
async def test_an_employee_invitation_starts_authorized_and_tells_the_visitor(people, clock, ctx):
    visitor, employee = await people()
    now = int(clock())
    resp = await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, proposer="13800000002"))
    data = resp.json()["data"]
    assert data["is_auth"] == 1 and data["proposer"] == "13800000002"
    assert await outbox(ctx) == [f"approval_pass_to_visitor:{data['id']}:sms",
                                 f"approval_pass_to_visitor:{data['id']}:wechat"]
    assert (await ctx.storage.db.outbox.find_one({"channel": "wechat"}))["to"] == "o-v1"


@pytest.mark.gen_test
async def test_an_employee_invites_only_as_themself(people, clock):
    _, employee = await people()
    now = int(clock())
    resp = await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, proposer="13800000002", interviewee_phone="13800000003"))
    assert resp.status == 403


@pytest.mark.gen_test
async def test_local_time_strings_are_read_in_the_configured_zone(people, clock):
    visitor, _ = await people()
    day = datetime.datetime.fromtimestamp(clock(), ZoneInfo("Asia/Shanghai")).date() + datetime.timedelta(days=1)
    resp = await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", f"{day} 09:30:00", f"{day} 11:00:00"))
    data = resp.json()["data"]
    expected = datetime.datetime.combine(day, datetime.time(9, 30), ZoneInfo("Asia/Shanghai")).timestamp()
    assert data["start_time"] == int(expected)
    assert data["end_time"] - data["start_time"] == 5400


@pytest.mark.gen_test
async def test_retinue_is_accepted_for_retinues_and_photos_are_served(people, clock, anonymous):
    visitor, _ = await people()
    now = int(clock())
    photo = base64.b64encode(make_jpeg("photo")).decode()
    body = application("13900000001", now + HOUR, now + 2 * HOUR, photo=photo)
    body.pop("retinues")
    body["retinue"] = [{"name": "随行一", "phone": "137-0000-0011", "photo": photo}]
    data = (await visitor.fetch("/v1/subject", "POST", json=body)).json()["data"]
    assert data["retinues"][0]["phone"] == "13700000011"
    assert data["photo"].startswith("https://visit.example.com/avatar/")
    image = await anonymous.fetch(data["retinues"][0]["photo"])
    assert image.status == 200 and image.body == make_jpeg("photo")
    assert photo not in str(data)


@pytest.mark.parametrize("change,fragment", [
    ({"end_time": "start"}, "end_time 必须晚于 start_time"),
    ({"start_time": -7200, "end_time": -HOUR}, "end_time 必须是将来的时间"),
    ({"subject_type": 2}, "subject_type"),
    ({"purpose": 5}, "purpose"),
    ({"name": "长" * 33}, "name 长度不能超过 32"),
    ({"come_from": "x" * 65}, "come_from"),
    ({"remark": "x" * 201}, "remark"),
    ({"phone": "12ab"}, "phone"),
    ({"start_time": "tomorrow"}, "start_time"),
    ({"retinues": [{"name": "r", "phone": "13700000000"}] * 21}, "retinues 最多 20 项"),
    ({"retinues": [{"name": "r"}]}, "缺少参数 retinues[0].phone"),
    ({"photo": base64.b64encode(b"GIF89a....").decode()}, "photo"),
    ({"photo": base64.b64encode(b"\xff\xd8\xff" + b"0" * (2 * 1024 * 1024)).decode()}, "2 MB"),
])
@pytest.mark.gen_test
async def test_bad_applications_are_400_and_store_nothing(people, clock, ctx, change, fragment):
    visitor, _ = await people()
    now = int(clock())
    body = application("13900000001", now + HOUR, now + 2 * HOUR)
    for key, value in change.items():
        body[key] = body["start_time"] if value == "start" else (now + value if key.endswith("_time")
                                                                   and isinstance(value, int) else value)
    resp = await visitor.fetch("/v1/subject", "POST", json=body)
    assert resp.status == 400, resp
    assert fragment in resp.json()["err_msg"]
    assert await ctx.storage.db.records.count_documents({}) == 0


# --- lists --------------------------------------------------------------------------------

async def seed_records(visitor, employee, clock):
    """Four visits: three applied by the visitor, one invitation by the employee."""
    now = int(clock())
    ids = []
    for offset, name in [(HOUR, "Alice"), (3 * HOUR, "a.b 访客"), (2 * HOUR, "Bob")]:
        resp = await visitor.fetch("/v1/subject", "POST", json=application(
            "13900000001", now + offset, now + offset + HOUR, name=name))
        ids.append(resp.json()["data"]["id"])
    resp = await employee.fetch("/v1/subject", "POST", json=application(
        "13900000005", now + 5 * HOUR, now + 6 * HOUR, proposer="13800000002", name="Carol"))
    ids.append(resp.json()["data"]["id"])
    return ids


@pytest.mark.gen_test
async def test_my_records_newest_visit_first_with_pages(people, clock):
    visitor, employee = await people()
    alice, ab, bob, carol = await seed_records(visitor, employee, clock)
    first = (await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001&size=2")).json()
    assert [r["id"] for r in first["data"]] == [ab, bob]
    assert first["page"] == {"current": 1, "size": 2, "count": 3, "total": 2}
    second = (await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001&size=2&page=2")).json()
    assert [r["id"] for r in second["data"]] == [alice]
    default = (await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001")).json()
    assert default["page"]["size"] == 5
    invited = (await employee.fetch("/v1/visit/records?type=mobile&proposer=13800000002")).json()
    assert [r["id"] for r in invited["data"]] == [carol]


@pytest.mark.gen_test
async def test_mobile_records_of_someone_else_are_403(people):
    visitor, _ = await people()
    resp = await visitor.fetch("/v1/visit/records?type=mobile&proposer=13800000002")
    assert resp.status == 403
    # Without a proposer the caller's own records are meant (the document cannot make it conditional).
    own = await visitor.fetch("/v1/visit/records?type=mobile")
    assert own.status == 200
    assert own.json()["data"] == (await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001")).json()["data"]


@pytest.mark.parametrize("query,expected", [
    ("name=alice", ["Alice"]),
    ("name=A", ["Carol", "a.b 访客", "Alice"]),
    ("name=a.b", ["a.b 访客"]),
    ("name=.*", []),
    ("name=访客", ["a.b 访客"]),
    ("interviewee=经理", ["Carol", "a.b 访客", "Bob", "Alice"]),
    ("phone=13900000005", ["Carol"]),
    ("proposer=13800000002", ["Carol"]),
    ("interviewee_phone=13800000002&is_auth=0", ["a.b 访客", "Bob", "Alice"]),
    ("is_auth=1", ["Carol"]),
    ("name=&phone=", ["Carol", "a.b 访客", "Bob", "Alice"]),
])
@pytest.mark.gen_test
async def test_admin_filters(people, clock, anonymous, query, expected):
    visitor, employee = await people()
    await seed_records(visitor, employee, clock)
    resp = await anonymous.fetch(f"/v1/visit/records?type=web&size=20&{query}", key=ADMIN_KEY)
    assert resp.status == 200, resp
    assert [r["name"] for r in resp.json()["data"]] == expected
    assert resp.json()["page"]["count"] == len(expected)


@pytest.mark.gen_test
async def test_time_filters_select_visits_overlapping_the_range(people, clock, anonymous):
    visitor, employee = await people()
    await seed_records(visitor, employee, clock)
    now = int(clock())
    # Visits: Alice [1h,2h], Bob [2h,3h], a.b [3h,4h], Carol [5h,6h]; the range [2.5h, 3.5h] overlaps Bob and a.b.
    resp = await anonymous.fetch(
        f"/v1/visit/records?type=web&start_time={now + 9000}&end_time={now + 12600}", key=ADMIN_KEY)
    assert [r["name"] for r in resp.json()["data"]] == ["a.b 访客", "Bob"]


@pytest.mark.gen_test
async def test_a_long_visit_that_began_before_the_range_is_found(people, clock, anonymous):
    visitor, _ = await people()
    now = int(clock())
    for name, start, end in [("长期", now + HOUR, now + 3 * 24 * HOUR), ("短期", now + 2 * HOUR, now + 3 * HOUR)]:
        await visitor.fetch("/v1/subject", "POST", json=application("13900000001", start, end, name=name))
    day_two = (now + 30 * HOUR, now + 31 * HOUR)
    resp = await anonymous.fetch(
        f"/v1/visit/records?type=web&start_time={day_two[0]}&end_time={day_two[1]}", key=ADMIN_KEY)
    assert [r["name"] for r in resp.json()["data"]] == ["长期"]


@pytest.mark.gen_test
async def test_page_size_is_capped_at_100(people, anonymous):
    await people()
    resp = await anonymous.fetch("/v1/visit/records?type=web&size=1000", key=ADMIN_KEY)
    assert resp.json()["page"]["size"] == 100
    bad = await anonymous.fetch("/v1/visit/records?type=web&page=0", key=ADMIN_KEY)
    assert bad.status == 400


@pytest.mark.gen_test
async def test_a_visitor_may_not_list_all_records(people):
    visitor, _ = await people()
    assert (await visitor.fetch("/v1/visit/records?type=web")).status == 403


@pytest.mark.gen_test
async def test_employee_sees_the_records_waiting_for_them(people, bind_employee, clock):
    visitor, employee = await people()
    alice, ab, bob, carol = await seed_records(visitor, employee, clock)
    resp = (await employee.fetch("/v1/auth/records?size=3")).json()
    assert [r["id"] for r in resp["data"]] == [carol, ab, bob]
    assert resp["page"]["count"] == 4
    other = await employee.fetch("/v1/auth/records?phone=13800000003")
    assert other.status == 403


# --- authorization ----------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_the_interviewee_authorizes_once_and_the_visitor_is_told_once(people, clock, ctx):
    visitor, employee = await people()
    now = int(clock())
    rid = (await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR))).json()["data"]["id"]
    assert (await employee.fetch(f"/v1/auth/{rid}", "PUT")).json() == {"code": 0, "err_msg": ""}
    again = await employee.fetch(f"/v1/auth/{rid}", "PUT")
    assert again.json() == {"code": 0, "err_msg": ""}
    record = (await employee.fetch("/v1/auth/records")).json()["data"][0]
    assert record["is_auth"] == 1
    passes = [e for e in await outbox(ctx) if e.startswith("approval_pass_to_visitor")]
    assert passes == [f"approval_pass_to_visitor:{rid}:sms", f"approval_pass_to_visitor:{rid}:wechat"]
    assert (await ctx.storage.db.records.find_one({"_id": rid}))["pending_events"] == []


@pytest.mark.gen_test
async def test_only_the_interviewee_may_authorize(people, bind_employee, clock, ctx):
    visitor, _ = await people()
    other = await bind_employee("o-e2", "赵六", "13800000003")
    now = int(clock())
    rid = (await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR))).json()["data"]["id"]
    resp = await other.fetch(f"/v1/auth/{rid}", "PUT")
    assert resp.status == 403
    assert (await ctx.storage.db.records.find_one({"_id": rid}))["is_auth"] == 0
    assert (await other.fetch("/v1/auth/99999", "PUT")).status == 404


@pytest.mark.gen_test
async def test_a_visit_that_is_over_cannot_be_authorized(people, clock):
    visitor, employee = await people()
    now = int(clock())
    rid = (await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR))).json()["data"]["id"]
    clock.advance(3 * HOUR)
    resp = await employee.fetch(f"/v1/auth/{rid}", "PUT")
    assert resp.status == 409
    assert resp.json()["err_msg"] == "来访时间已过，无法授权"


@pytest.mark.gen_test
async def test_admin_may_authorize_any_record(people, clock, anonymous):
    visitor, _ = await people()
    now = int(clock())
    rid = (await visitor.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR))).json()["data"]["id"]
    assert (await anonymous.fetch(f"/v1/auth/{rid}", "PUT", key=ADMIN_KEY)).json()["code"] == 0


@pytest.mark.gen_test
async def test_the_count_of_all_records_follows_applications_and_deletions(people, clock, anonymous):
    visitor, employee = await people()
    alice, *_ = await seed_records(visitor, employee, clock)
    resp = await anonymous.fetch(f"/v1/visit/records/{alice}", "DELETE", key=ADMIN_KEY)
    assert resp.json()["code"] == 0, resp
    page = (await anonymous.fetch("/v1/visit/records?type=web&size=2", key=ADMIN_KEY)).json()["page"]
    assert (page["count"], page["total"]) == (3, 2)


@pytest.mark.gen_test
async def test_a_deletion_is_finished_at_once_and_lowers_the_kept_count_of_records(people, clock, anonymous, ctx,
                                                                                   caplog):
    visitor, employee = await people()
    alice, *_ = await seed_records(visitor, employee, clock)
    kept = (await ctx.storage.db.counters.find_one({"_id": "longest_visit"}))["records"]
    resp = await anonymous.fetch(f"/v1/visit/records/{alice}", "DELETE", key=ADMIN_KEY)
    assert resp.json()["code"] == 0, resp
    assert (await ctx.storage.db.counters.find_one({"_id": "longest_visit"}))["records"] == kept - 1
    assert "will be finished later" not in caplog.text
