"""/admin/records: filters, paging, a record's detail, deletion and the CSV export (issue: /admin pages)."""
import csv
import datetime
import io
import json

import pytest

from tornado.simple_httpclient import HTTPStreamClosedError

from wxapp import storage

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, GATE_KEY

HOUR = 3600


async def invite(ctx, name, phone, start, *, hours=2, interviewee="李经理", interviewee_phone="13800000002",
                 retinues=(), come_from="星辰科技"):
    """An employee's invitation, made through the domain (authorized at once)."""
    employee = {"_id": f"o-{interviewee_phone}", "type": "employee", "phone": interviewee_phone,
                "department": "市场部"}
    record = await ctx.visits.apply(employee, {
        "subject_type": 1, "name": name, "phone": phone, "purpose": 2, "remark": "", "come_from": come_from,
        "proposer": interviewee_phone, "interviewee": interviewee, "interviewee_phone": interviewee_phone,
        "start_time": int(start), "end_time": int(start + hours * HOUR),
        "retinues": [{"name": n, "phone": p} for n, p in retinues],
    })
    return record["_id"]


@pytest.fixture
def admin(admin_login, io_loop):
    return io_loop.run_sync(admin_login)


@pytest.mark.gen_test
async def test_records_need_an_admin_session_and_the_login_comes_back_to_the_search(client):
    browser = client()
    resp = await browser.fetch("/admin/records?name=%E5%BC%A0")  # name=张, as a browser sends it
    assert resp.status == 302
    assert resp.location == "/admin/login?next=/admin/records%3Fname%3D%25E5%25BC%25A0"
    login = await browser.fetch(resp.location)
    assert 'value="/admin/records?name=%E5%BC%A0"' in login.text
    back = await browser.fetch("/admin/login", "POST", form={
        "username": ADMIN_USER, "password": ADMIN_PASSWORD, "next": "/admin/records?name=%E5%BC%A0"})
    assert back.location == "/admin/records?name=%E5%BC%A0"


@pytest.mark.gen_test
async def test_records_need_an_admin_session(anonymous):
    assert (await anonymous.fetch("/admin/records.csv")).status == 302
    assert (await anonymous.fetch("/admin/records/1")).status == 302


@pytest.mark.gen_test
async def test_the_list_masks_phone_numbers_and_the_detail_shows_them_whole(admin, ctx, clock):
    rid = await invite(ctx, "张三", "13900000001", clock() + HOUR, retinues=[("随行一", "13700000011")])
    page = await admin.fetch("/admin/records")
    assert page.status == 200
    assert "张三" in page.text and "139****0001" in page.text and "138****0002" in page.text
    assert "13900000001" not in page.text and "13800000002" not in page.text
    detail = await admin.fetch(f"/admin/records/{rid}")
    assert detail.status == 200
    for whole in ("13900000001", "13800000002", "13700000011", "随行一", "星辰科技", "已授权"):
        assert whole in detail.text


@pytest.mark.gen_test
async def test_filters_select_what_the_admin_asked_for(admin, ctx, clock):
    now = clock()
    await invite(ctx, "王小明", "13900000001", now + HOUR)
    await invite(ctx, "李小红", "13900000002", now + 3 * 86400, interviewee="赵总", interviewee_phone="13800000009")
    pending = (await ctx.visits.apply({"_id": "o-v", "type": "employee", "phone": "13800000003"}, {
        "subject_type": 1, "name": "陈某", "phone": "13900000003", "purpose": 0, "remark": "", "come_from": "",
        "proposer": "13800000003", "interviewee": "孙经理", "interviewee_phone": "13800000003",
        "start_time": int(now + HOUR), "end_time": int(now + 2 * HOUR), "retinues": []}))["_id"]
    await ctx.storage.db.records.update_one({"_id": pending}, {"$set": {"is_auth": 0, "status": "pending"}})

    async def names(query):
        resp = await admin.fetch("/admin/records?" + query)
        assert resp.status == 200, resp
        return {n for n in ("王小明", "李小红", "陈某") if f"<td>{n}" in resp.text}

    assert await names("") == {"王小明", "李小红", "陈某"}
    assert await names("name=小") == {"王小明", "李小红"}
    assert await names("phone=139-0000-0002") == {"李小红"}
    assert await names("interviewee=赵") == {"李小红"}
    assert await names("interviewee_phone=13800000002") == {"王小明"}
    assert await names("is_auth=0") == {"陈某"}
    date = (datetime.datetime.fromtimestamp(now, ctx.config.tz).date() + datetime.timedelta(days=3)).isoformat()
    assert await names(f"start={date}&end={date}") == {"李小红"}


@pytest.mark.gen_test
async def test_bad_filters_are_explained_next_to_their_field(admin):
    resp = await admin.fetch("/admin/records?phone=138abc&start=2026-13-01")
    assert resp.status == 400
    assert "请输入完整的手机号码" in resp.text and "开始日期应为日期" in resp.text
    resp = await admin.fetch("/admin/records?start=2026-11-20&end=2026-11-10")
    assert resp.status == 400 and "结束日期不能早于开始日期" in resp.text
    assert (await admin.fetch("/admin/records.csv?phone=abc")).status == 400


@pytest.mark.gen_test(timeout=60)
async def test_paging_walks_through_every_record_once(admin, ctx, clock):
    for n in range(45):
        await invite(ctx, f"访客{n:02d}号", f"139000001{n:02d}", clock() + HOUR + n * 60)
    seen = []
    for number in (1, 2, 3):
        resp = await admin.fetch(f"/admin/records?page={number}")
        assert f"共 45 条记录，第 {number} / 3 页" in resp.text
        seen += [f"访客{n:02d}号" for n in range(45) if f"访客{n:02d}号" in resp.text]
    assert sorted(seen) == [f"访客{n:02d}号" for n in range(45)]
    first = (await admin.fetch("/admin/records?page=1")).text
    assert first.index("访客44号") < first.index("访客43号")  # the latest visit first


@pytest.mark.gen_test
async def test_a_signed_in_record_shows_qr_codes_passes_and_notifications(admin, journey, ctx, anonymous):
    rid = await journey()
    record = await ctx.visits.get(rid)
    qrcode = json.dumps({"id": rid, "qrcode": record["retinues"][1]["token"]})
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": "东门-1"}, key=GATE_KEY)
    assert resp.json()["code"] == 0
    await ctx.pass_log.flush()
    detail = (await admin.fetch(f"/admin/records/{rid}")).text
    for person in [record, *record["retinues"]]:
        assert f'src="/qrcode/{person["token"]}.png"' in detail
    assert "已签到" in detail and "东门-1" in detail and "随行人员 2" in detail and "放行" in detail
    assert "签到成功（访客）" in detail and "访客已签到（员工）" in detail and "短信" in detail


@pytest.mark.gen_test
async def test_unknown_records_are_a_friendly_404(admin):
    resp = await admin.fetch("/admin/records/999")
    assert resp.status == 404 and "访客记录不存在" in resp.text
    assert (await admin.fetch("/admin/records/999/delete")).status == 404


@pytest.mark.gen_test
async def test_deleting_asks_first_then_stops_the_codes_and_removes_koala_subjects(admin, journey, ctx, anonymous,
                                                                                   fakes):
    rid = await journey()
    record = await ctx.visits.get(rid)
    confirm = await admin.fetch(f"/admin/records/{rid}/delete?back=name%3D%E5%BC%A0")
    assert confirm.status == 200 and "此操作不可撤销" in confirm.text
    assert await ctx.storage.db.records.count_documents({"_id": rid}) == 1  # asking deletes nothing
    refused = await admin.fetch(f"/admin/records/{rid}/delete", "POST", form={}, xsrf=False)
    assert refused.status == 403
    resp = await admin.fetch(f"/admin/records/{rid}/delete", "POST",
                             form={"_xsrf": admin.cookie("_xsrf"), "back": "name=%E5%BC%A0&evil=1"})
    assert resp.status == 302 and resp.location == "/admin/records?name=%E5%BC%A0&done=deleted"
    listed = await admin.fetch(resp.location)
    assert "访客记录已删除" in listed.text
    assert await ctx.storage.db.records.count_documents({"_id": rid}) == 0
    qrcode = json.dumps({"id": rid, "qrcode": record["token"]})
    gate = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode}, key=GATE_KEY)
    assert gate.json()["code"] == -204
    assert not fakes.koala.visitors()


@pytest.mark.gen_test
async def test_the_csv_export_opens_in_excel_with_the_filtered_list(admin, ctx, clock):
    await invite(ctx, "=HYPERLINK(\"http://x\")", "13900000001", clock() + HOUR, retinues=[("随行一", "13700000011")])
    await invite(ctx, "王小明", "13900000002", clock() + 2 * HOUR)
    await invite(ctx, "别人", "13900000003", clock() + HOUR, interviewee="赵总", interviewee_phone="13800000009")
    resp = await admin.fetch("/admin/records.csv?interviewee_phone=13800000002")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in resp.headers["Content-Disposition"]
    assert resp.body.startswith("\ufeff".encode())  # Excel reads UTF-8 only with the BOM
    text = resp.body.decode("utf-8-sig")
    assert "\r\n" in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["记录ID", "访客姓名", "访客手机"]
    assert [row[1] for row in rows[1:]] == ["王小明", "'=HYPERLINK(\"http://x\")"]  # latest first; no formula
    assert rows[2][2] == "139****0001" and rows[2][3] == "1" and rows[2][4] == "随行一"
    assert "13900000001" not in text and "13800000002" not in text


@pytest.mark.gen_test(timeout=60)
async def test_an_export_the_database_breaks_off_is_a_failed_download_not_a_short_file(admin, ctx, clock,
                                                                                    monkeypatch):
    start = int(clock()) + HOUR
    await ctx.storage.db.records.insert_many([{
        "_id": i, "subject_type": 1, "name": f"访客{i}", "phone": f"139{i:08d}", "purpose": 2, "remark": "",
        "come_from": "", "proposer": "13800000002", "interviewee": "李经理", "interviewee_phone": "13800000002",
        "department": "市场部", "start_time": start + i, "end_time": start + i + HOUR, "photo": "", "token": "",
        "retinues": [], "tokens": [], "is_auth": 1, "status": "approved", "signin_time": 0,
        "phones": [f"139{i:08d}"], "parties": [f"139{i:08d}"], "create_time": start - HOUR, "pending_events": [],
    } for i in range(1, 351)])
    whole = await admin.fetch("/admin/records.csv")
    assert whole.status == 200 and len(list(csv.reader(io.StringIO(whole.body.decode("utf-8-sig"))))) == 351
    each = ctx.visits.each

    async def failing(*args, **kwargs):  # the database gives up on the read after 250 rows
        n = 0
        async for record in each(*args, **kwargs):
            n += 1
            if n > 250:
                raise storage.UNAVAILABLE_ERRORS[0]("operation cancelled")
            yield record
    monkeypatch.setattr(ctx.visits, "each", failing)
    with pytest.raises(HTTPStreamClosedError):  # the connection ends without the last chunk
        await admin.fetch("/admin/records.csv")
    # Before anything was sent, the failure is an error page, not a download.
    monkeypatch.setattr(ctx.visits, "each", lambda *a, **k: failing_at_once())

    async def failing_at_once():
        raise storage.UNAVAILABLE_ERRORS[0]("no primary")
        yield  # an async generator
    assert (await admin.fetch("/admin/records.csv")).status == 503
