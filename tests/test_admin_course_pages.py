"""/admin: declining and cancelling a visit, the status filter, Koala removals that keep failing, and
who the dashboard counts as on site now (CONTRACT §9)."""
import datetime
import json

import pytest

from tests.conftest import GATE_KEY, KIOSK_KEY
from tests.test_admin_records_pages import invite

HOUR = 3600


@pytest.fixture
def admin(admin_login, io_loop):
    return io_loop.run_sync(admin_login)


def xsrf(admin, **fields) -> dict:
    return {"_xsrf": admin.cookie("_xsrf"), **fields}


@pytest.mark.gen_test
async def test_the_admin_declines_with_a_reason_after_confirming_and_returns_to_the_record(admin, ctx, clock, fakes):
    rid = await invite(ctx, "张三", "13900000001", clock() + HOUR)
    detail = (await admin.fetch(f"/admin/records/{rid}?back=name%3D%E5%BC%A0")).text
    assert 'id="decline"' in detail and 'id="cancel"' in detail
    confirm = await admin.fetch(f"/admin/records/{rid}/decline?back=name%3D%E5%BC%A0")
    assert confirm.status == 200 and "确认拒绝来访" in confirm.text and 'name="reason"' in confirm.text
    assert (await ctx.visits.get(rid))["status"] == "approved"  # asking changes nothing
    refused = await admin.fetch(f"/admin/records/{rid}/decline", "POST", form={"reason": "x"}, xsrf=False)
    assert refused.status == 403
    too_long = await admin.fetch(f"/admin/records/{rid}/decline", "POST", form=xsrf(admin, reason="长" * 101))
    assert too_long.status == 400 and "拒绝原因最多 100 个字" in too_long.text
    resp = await admin.fetch(f"/admin/records/{rid}/decline", "POST",
                             form=xsrf(admin, reason="会议室已满", back="name=%E5%BC%A0&evil=1"))
    assert resp.status == 302
    assert resp.location == f"/admin/records/{rid}?back=name%3D%25E5%25BC%25A0&done=declined"
    shown = (await admin.fetch(resp.location)).text
    assert "已拒绝来访，访客会收到通知" in shown and "会议室已满" in shown
    assert 'text-bg-danger align-middle fs-6">已拒绝<' in shown  # the status with its colour
    assert 'id="decline"' not in shown and 'id="cancel"' not in shown  # nothing left to decide
    stored = await ctx.visits.get(rid)
    assert stored["status"] == "declined" and stored["decline_reason"] == "会议室已满"
    assert await ctx.storage.db.outbox.count_documents({"record_id": rid, "event": "decline_to_visitor"}) >= 1


@pytest.mark.gen_test
async def test_the_admin_cancels_and_a_move_the_status_forbids_is_explained_in_chinese(admin, journey, ctx):
    rid = await journey()  # signed in: neither move is allowed any more
    detail = (await admin.fetch(f"/admin/records/{rid}")).text
    assert 'id="decline"' not in detail and 'id="cancel"' not in detail
    for move, message in (("decline", "该预约已签到，无法拒绝"), ("cancel", "该预约已签到，无法取消")):
        resp = await admin.fetch(f"/admin/records/{rid}/{move}", "POST", form=xsrf(admin))
        assert resp.status == 409, (move, resp)
        assert message in resp.text and 'id="move-error"' in resp.text
    assert (await ctx.visits.get(rid))["status"] == "signed_in"
    other = await invite(ctx, "李四", "13900000004", ctx.clock() + HOUR)
    resp = await admin.fetch(f"/admin/records/{other}/cancel", "POST", form=xsrf(admin))
    assert resp.status == 302 and resp.location == f"/admin/records/{other}?done=cancelled"
    shown = (await admin.fetch(resp.location)).text
    assert "预约已取消，访客会收到通知" in shown and 'id="cancelled-by">管理员<' in shown
    assert (await ctx.visits.get(other))["status"] == "cancelled"
    assert (await admin.fetch("/admin/records/999/cancel")).status == 404


@pytest.mark.gen_test
async def test_the_records_list_filters_by_status(admin, ctx, clock):
    approved = await invite(ctx, "王小明", "13900000001", clock() + HOUR)
    declined = await invite(ctx, "李小红", "13900000002", clock() + 2 * HOUR)
    await ctx.visits.decline(declined, None, "")
    await invite(ctx, "陈某", "13900000003", clock() + 3 * HOUR)

    async def names(query):
        resp = await admin.fetch("/admin/records?" + query)
        assert resp.status == 200, resp
        return {n for n in ("王小明", "李小红", "陈某") if f"<td>{n}" in resp.text}

    assert await names("status=declined") == {"李小红"}
    assert await names("status=approved") == {"王小明", "陈某"}
    assert await names("status=approved&name=小") == {"王小明"}
    assert await names("status=") == {"王小明", "李小红", "陈某"}
    page = (await admin.fetch("/admin/records?status=declined")).text
    assert '<option value="declined" selected>已拒绝</option>' in page
    assert approved  # listed under its own status above
    csv_text = (await admin.fetch("/admin/records.csv?status=declined")).body.decode("utf-8-sig")
    assert "李小红" in csv_text and "王小明" not in csv_text


@pytest.mark.gen_test(timeout=30)
async def test_koala_removals_that_keep_failing_are_listed_and_retried(admin, journey, ctx, fakes, anonymous):
    rid = await journey()
    subjects = [p["koala_id"] for p in [await ctx.visits.get(rid), *(await ctx.visits.get(rid))["retinues"]]]
    fakes.koala.fail_next(100)
    out = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert out.json()["code"] == 0
    page = await admin.fetch("/admin/koala")
    assert page.status == 200 and 'href="/admin/koala"' in page.text and "考拉同步" in page.text
    assert f'href="/admin/records/{rid}">#{rid}<' in page.text
    assert "、".join(str(s) for s in subjects) in page.text
    assert '<span class="badge text-bg-warning">1</span>' in page.text and ">重试</button>" in page.text
    resp = await admin.fetch("/admin/koala", "POST", form=xsrf(admin, job=f"record:{rid}"))
    assert resp.status == 302 and resp.location == "/admin/koala?done=koala_failing"
    page = (await admin.fetch(resp.location)).text
    assert "考拉仍未能删除" in page and '<span class="badge text-bg-warning">2</span>' in page
    fakes.koala.reset()  # Koala answers again
    resp = await admin.fetch("/admin/koala", "POST", form=xsrf(admin, job=f"record:{rid}"))
    assert resp.location == "/admin/koala?done=koala_cleared"
    page = (await admin.fetch(resp.location)).text
    assert "已从考拉删除这些访客" in page and "没有失败的考拉删除任务" in page
    assert not fakes.koala.visitors()
    refused = await admin.fetch("/admin/koala", "POST", form={"job": f"record:{rid}"}, xsrf=False)
    assert refused.status == 403


async def scan(anonymous, record, person, direction="in") -> int:
    token = ([record] + record["retinues"])[person]["token"]
    body = {"qrcode": json.dumps({"id": record["_id"], "qrcode": token}), "direction": direction}
    return (await anonymous.fetch("/v1/visit/qrcode", "POST", json=body, key=GATE_KEY)).json()["code"]


@pytest.mark.gen_test(timeout=30)
async def test_on_site_now_counts_only_people_inside(admin, journey, ctx, anonymous):
    from tests.test_admin_dashboard import figure
    rid = await journey()
    record = await ctx.visits.get(rid)
    assert [await scan(anonymous, record, n) for n in (0, 1, 2)] == [0, 0, 0]
    await ctx.pass_log.flush()
    assert figure((await admin.fetch("/admin/")).text, "stat-on-site") == 3
    assert await scan(anonymous, record, 1, "out") == 0  # one leaves through the gate
    assert await scan(anonymous, record, 2, "out") == 0
    assert await scan(anonymous, record, 2, "in") == 0  # and comes back in
    await ctx.pass_log.flush()
    html = (await admin.fetch("/admin/")).text
    assert figure(html, "stat-on-site") == 2 and figure(html, "stat-passed") == 3
    out = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert out.json()["code"] == 0  # checked out at the kiosk: nobody of the visit counts as inside
    assert figure((await admin.fetch("/admin/")).text, "stat-on-site") == 0


@pytest.mark.gen_test(timeout=30)
async def test_declined_and_cancelled_visits_are_no_longer_expected_today(admin, ctx, clock):
    from tests.test_admin_dashboard import figure
    now = datetime.datetime.fromtimestamp(clock(), ctx.config.tz)  # noon: the visits stay on today
    clock.advance(now.replace(hour=12, minute=0, second=0).timestamp() - clock())
    for n in range(4):
        await invite(ctx, f"访客{n}", f"1390000000{n}", clock() + 600 + n)
    waiting = await invite(ctx, "待批访客", "13900000009", clock() + 900)
    await ctx.storage.db.records.update_one({"_id": waiting}, {"$set": {"is_auth": 0, "status": "pending"}})
    html = (await admin.fetch("/admin/")).text
    assert figure(html, "stat-expected") == 5 and "其中待审批 1" in html
    await ctx.visits.decline(1, None, "")
    await ctx.visits.cancel(2, None)
    await ctx.visits.decline(waiting, None, "")
    html = (await admin.fetch("/admin/")).text
    assert figure(html, "stat-expected") == 2 and "其中待审批 0" in html
