"""An admin's day in /admin, in a real headless Chromium on a desktop screen."""
import csv
import io
import json
import re
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, GATE_KEY
from tests.phone import desktop, log_into_admin
from tests.test_admin_records_pages import invite

TIMEOUT = 120


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_logs_in_sees_today_and_logs_out(http_server, base_url, request):
    async with desktop(request.node.name) as p:
        page = p.page
        await page.goto(base_url + "/admin/login")
        await page.fill("#username", ADMIN_USER)
        await page.fill("#password", "wrong password")
        await page.click("button[type=submit]")
        await page.wait_for_selector(".alert-danger")
        assert "用户名或密码错误" in await page.inner_text(".alert-danger")
        await p.shot("login-refused")
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD)
        assert "今日概览" in await page.inner_text("h1")
        assert await page.is_visible("svg.chart")
        await p.shot("home")
        await page.click("text=退出登录")
        await page.wait_for_url(base_url + "/admin/login")
        await page.goto(base_url + "/admin/")
        await page.wait_for_url(f"{base_url}/admin/login?next=/admin/")
        assert not p.unexpected_errors(401)  # the refused login answers 401


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_searches_opens_a_visit_and_deletes_it(http_server, base_url, journey, ctx, clock, request):
    rid = await journey()
    await invite(ctx, "王五", "13900000005", clock() + 3600)
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, "/admin/records")
        assert await page.locator("#records tbody tr").count() == 2
        await p.shot("all-records")
        await page.fill("#f-name", "张")
        await page.fill("#f-phone", "139 0000 0001")
        await page.click("#filters button[type=submit]")
        await page.wait_for_url(re.compile(r"/admin/records\?.*name="))
        rows = page.locator("#records tbody tr")
        assert await rows.count() == 1
        assert "139****0001" in await rows.inner_text()
        await p.shot("search")
        await page.click("#records >> text=详情")
        await page.wait_for_url(re.compile(rf"/admin/records/{rid}\?back="))
        assert await page.locator("#people img.qr-img").count() == 3
        assert "13900000001" in await page.inner_text("#people")
        await p.shot("detail")
        await page.click("#delete")
        await page.wait_for_selector("#confirm-delete")
        await p.shot("confirm")
        await page.click("#confirm-delete")
        await page.wait_for_url(re.compile(r"/admin/records\?.*done=deleted"))
        assert "访客记录已删除" in await page.inner_text(".alert-success")
        assert "没有符合条件的访客记录" in await page.inner_text("main")  # still the same search
        await p.shot("deleted")
        assert not p.unexpected_errors()
    assert await ctx.storage.db.records.count_documents({}) == 1


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_exports_the_filtered_list_for_excel(http_server, base_url, ctx, clock, request):
    await invite(ctx, "王五", "13900000005", clock() + 3600)
    await invite(ctx, "赵六", "13900000006", clock() + 7200, interviewee="孙总", interviewee_phone="13800000009")
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, "/admin/records?interviewee=孙")
        await p.shot("filtered")
        async with page.expect_download() as info:
            await page.click("#export")
        download = await info.value
        assert download.suggested_filename.endswith(".csv")
        data = Path(await download.path()).read_bytes()
        assert not p.unexpected_errors()
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert [row[1] for row in rows[1:]] == ["赵六"]
    assert rows[1][2] == "139****0006"


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_follows_a_visit_through_the_gate_log_and_the_notifications(http_server, base_url, journey, ctx,
                                                                                anonymous, request):
    rid = await journey()
    record = await ctx.visits.get(rid)
    for token, gate in ((record["token"], "东门"), (record["retinues"][0]["token"], "东门"), ("x" * 20, "西门")):
        qrcode = json.dumps({"id": rid, "qrcode": token})
        await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": gate}, key=GATE_KEY)
    await ctx.pass_log.flush()
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, "/admin/passes")
        assert await page.locator("#passes tbody tr").count() == 3
        await p.shot("passes")
        await page.select_option("#f-result", "refused")
        await page.click("#filters button[type=submit]")
        await page.wait_for_url(re.compile(r"result=refused"))
        assert await page.locator("#passes tbody tr").count() == 1
        assert "西门" in await page.inner_text("#passes")
        await p.shot("passes-refused")
        await page.click("text=消息通知")
        await page.wait_for_url(base_url + "/admin/notifications")
        assert "审批通过（访客）" in await page.inner_text("main")
        await p.shot("notifications")
        await page.click("text=概览")
        await page.wait_for_url(base_url + "/admin/")
        assert await page.inner_text("#stat-passed .value") == "2"
        await p.shot("home")
        assert not p.unexpected_errors()


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_declines_a_visit_filters_by_status_and_retries_koala_work(
        http_server, base_url, journey, ctx, clock, fakes, anonymous, request):
    from tests.conftest import KIOSK_KEY
    signed = await journey()
    rid = await invite(ctx, "王五", "13900000005", clock() + 3600)
    fakes.koala.fail_next(100)  # Koala refuses: the removal after sign-out stays queued
    await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, f"/admin/records/{rid}")
        await p.shot("approved-visit")
        await page.click("#decline")
        await page.wait_for_url(re.compile(rf"/admin/records/{rid}/decline"))
        await page.fill("#reason", "当天会议室已满")
        await p.shot("decline-confirm")
        await page.click("#confirm-move")
        await page.wait_for_url(re.compile(rf"/admin/records/{rid}\?done=declined"))
        assert "已拒绝来访" in await page.inner_text(".alert-success")
        assert "已拒绝" in await page.inner_text("h1 .badge")
        assert await page.locator("#decline, #cancel").count() == 0
        await p.shot("declined")
        await page.goto(base_url + "/admin/records")
        await page.select_option("#f-status", "declined")
        await page.click("#filters button[type=submit]")
        await page.wait_for_url(re.compile(r"/admin/records\?.*status=declined"))
        rows = page.locator("#records tbody tr")
        assert await rows.count() == 1 and "王五" in await rows.inner_text()
        await p.shot("filtered-declined")
        await page.click("nav >> text=考拉同步")
        await page.wait_for_url(base_url + "/admin/koala")
        assert f"#{signed}" in await page.inner_text("#koala-work")
        await p.shot("koala-failing")
        fakes.koala.reset()  # Koala answers again
        await page.click("#koala-work >> text=重试")
        await page.wait_for_url(re.compile(r"/admin/koala\?done=koala_cleared"))
        assert "没有失败的考拉删除任务" in await page.inner_text("main")
        await p.shot("koala-cleared")
        assert p.errors == []
