"""The journeys inside WeChat, in a real headless Chromium on a phone-sized screen."""
import datetime
import re

import pytest

from tests.conftest import last_code
from tests.phone import phone

TIMEOUT = 120


@pytest.fixture
def site(configured, ctx, http_server, base_url, io_loop):
    """The servers settings with cloud_url = this test server, as the phone reaches it."""
    async def save():
        servers = await ctx.system_settings.servers()
        await ctx.system_settings.save_servers({**servers, "cloud_url": base_url})
    io_loop.run_sync(save)
    return base_url


async def at(page, path: str) -> None:
    """Wait until the browser shows `path` (a regex; the fragment WeChat's redirect leaves is ignored)."""
    await page.wait_for_url(re.compile(rf"^[^#]*{path}(#.*)?$"))


def tomorrow(ctx) -> str:
    return (datetime.datetime.fromtimestamp(ctx.clock(), ctx.config.tz).date()
            + datetime.timedelta(days=1)).isoformat()


async def wechat_open(p, site, fakes, openid, nickname):
    """Open the home page as a WeChat user: the login runs through the local WeChat."""
    fakes.wechat.add_user(openid, nickname=nickname)
    fakes.wechat.login_as(openid)
    await p.page.goto(site + "/h5/")
    await at(p.page, r"/h5/")


async def bind(p, fakes, phone_number, name=None):
    page = p.page
    if name:
        await page.fill("#name", name)
    await page.fill("#phone", phone_number)
    await page.click("#send-code")
    await page.wait_for_selector("#send-code:has-text('秒后重发')")
    await p.shot("code-sent")
    await page.fill("#code", last_code(fakes, phone_number))
    await page.click("button[type=submit]")
    await at(page, r"/h5/")


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_visitor_binds_applies_with_a_retinue_and_sees_it_pending(site, fakes, ctx, request):
    fakes.koala.add_employee("李经理", "13800000002", department="市场部")
    async with phone(request.node.name) as p:
        page = p.page
        await wechat_open(p, site, fakes, "o-v1", "访客小张")
        await p.shot("home-unbound")
        await page.click("text=我是访客")
        await p.shot("bind-visitor")
        await page.fill("#phone", "13900000001")
        await page.fill("#code", "123")
        await page.click("button[type=submit]")
        await page.wait_for_selector(".field-error[data-for=code]:visible")
        assert "验证码错误" in await page.inner_text(".field-error[data-for=code]")
        await p.shot("bind-wrong-code")
        await bind(p, fakes, "13900000001")
        await p.shot("home-visitor")
        await page.click("text=预约来访")
        await at(page, r"/h5/apply")
        await page.click("button[type=submit]")  # nothing filled in: the error stands next to the name
        await page.wait_for_selector(".field-error[data-for=name]:visible")
        assert "请填写" in await page.inner_text(".field-error[data-for=name]")
        await p.shot("apply-missing-name")
        await page.fill("#name", "张三")
        await page.fill("#come_from", "星辰科技")
        await page.select_option("#purpose", "2")
        await page.fill("#date", tomorrow(ctx))
        await page.fill("#start", "09:30")
        await page.fill("#end", "11:00")
        await page.click("#add-retinue")
        await page.fill(".retinue >> nth=0 >> [name=retinue_name]", "随行一")
        await page.fill(".retinue >> nth=0 >> [name=retinue_phone]", "13700000011")
        await page.click("#add-retinue")
        await page.click(".retinue >> nth=1 >> .remove-retinue")
        await page.fill("#interviewee", "李经理")
        await page.fill("#interviewee_phone", "13800000002")
        await p.shot("apply-filled")
        await page.click("button[type=submit]")
        await at(page, r"/h5/records/\d+")
        await p.shot("record-pending")
        assert "待审批" in await page.inner_text(".page__title")
        assert "随行一" in await page.inner_text(".weui-form-preview")
        await page.click("text=全部记录")
        await at(page, r"/h5/records")
        await p.shot("records")
        assert await page.locator(".record").count() == 1
        assert p.unexpected_errors(400) == []  # the wrong code and the empty form were refused with 400
    record = await ctx.storage.db.records.find_one({})
    assert [r["name"] for r in record["retinues"]] == ["随行一"] and record["is_auth"] == 0


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_employee_binds_and_approves_the_waiting_visitor(site, fakes, ctx, bind_visitor, request):
    fakes.koala.add_employee("李经理", "13800000002", department="市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(ctx.clock())
    for offset, name in ((7200, "张三"), (3600, "王五")):
        await visitor.fetch("/v1/subject", "POST", json={
            "subject_type": 1, "name": name, "phone": "13900000001", "proposer": "13900000001",
            "interviewee": "李经理", "interviewee_phone": "13800000002",
            "start_time": now + offset, "end_time": now + offset + 3600})
    await ctx.visits.authorize(2, None)  # 王五 was approved already; 张三 waits
    async with phone(request.node.name) as p:
        page = p.page
        await wechat_open(p, site, fakes, "o-e1", "李经理")
        await page.click("text=我是员工")
        await p.shot("bind-employee")
        await bind(p, fakes, "13800000002", name="李经理")
        await p.shot("home-employee")
        await page.click("text=待我审批")
        await at(page, r"/h5/approvals")
        await p.shot("approvals")
        first = page.locator(".approval").first
        assert "张三" in await first.inner_text() and "待审批" in await first.inner_text()
        await first.locator(".authorize").click()
        await page.wait_for_selector(".approval >> nth=0 >> .status:has-text('已授权')")
        await p.shot("approved")
        await page.click("text=返回首页")
        await page.click("text='我的'")
        await at(page, r"/h5/me")
        await p.shot("me")
        assert "市场部" in await page.inner_text(".profile")
        assert p.errors == []
    assert (await ctx.storage.db.records.find_one({"_id": 1}))["is_auth"] == 1


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_after_kiosk_signin_the_visitor_sees_every_qr_code(site, fakes, ctx, journey, request):
    rid = await journey(sign_in=False)
    async with phone(request.node.name) as p:
        page = p.page
        await wechat_open(p, site, fakes, "o-v1", "访客小张")
        await page.goto(f"{site}/h5/records/{rid}")
        assert "已授权" in await page.inner_text(".page__title")
        await p.shot("authorized")
        signin = await ctx.visits.signin("13700000012")
        assert signin["signin_time"]
        await page.reload()
        await page.wait_for_selector(".pass img")
        await p.shot("passes")
        sizes = await page.eval_on_selector_all(
            ".pass img", "imgs => imgs.map(i => [i.complete && i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(sizes) == 3
        assert all(natural > 0 and shown >= 240 for natural, shown in sizes)
        assert "屏幕亮度" in await page.inner_text(".passes")
        assert p.errors == []


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_employee_declines_in_the_sheet_and_a_refusal_is_shown_in_chinese(
        site, fakes, ctx, bind_visitor, bind_employee, request):
    await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(ctx.clock())
    for offset, name in ((7200, "张三"), (3600, "王五")):
        await visitor.fetch("/v1/subject", "POST", json={
            "subject_type": 1, "name": name, "phone": "13900000001", "proposer": "13900000001",
            "interviewee": "李经理", "interviewee_phone": "13800000002",
            "start_time": now + offset, "end_time": now + offset + 3600})
    async with phone(request.node.name) as p:
        page = p.page
        await wechat_open(p, site, fakes, "o-e1", "李经理")
        await page.goto(site + "/h5/approvals")
        first = page.locator(".approval").first
        assert "张三" in await first.inner_text()
        await first.locator(".decline").click()
        await page.wait_for_selector("#decline-sheet .weui-half-screen-dialog")
        await page.fill("#decline-reason", "当天出差，请改日再约")
        assert await page.inner_text("#decline-count") == "10"
        await p.shot("decline-sheet")
        await page.click("#decline-confirm")
        await page.wait_for_selector(".approval >> nth=0 >> .status:has-text('已拒绝')")
        assert await first.locator(".decline, .authorize").count() == 0
        assert await page.is_hidden("#decline-sheet .weui-half-screen-dialog")
        await p.shot("declined")
        # The visitor calls the other visit off meanwhile: declining it is refused, in Chinese.
        assert (await visitor.fetch("/v1/visit/records/2/cancel", "POST")).json()["code"] == 0
        await page.locator(".approval >> nth=1 >> .decline").click()
        await page.click("#decline-confirm")
        await page.wait_for_selector("#decline-error:not([hidden])")
        assert await page.inner_text("#decline-error") == "该预约已取消，无法拒绝"
        await p.shot("decline-refused")
        await page.click("#decline-cancel")
        assert await page.is_hidden("#decline-sheet .weui-half-screen-dialog")
        assert p.unexpected_errors(409) == []
    stored = await ctx.storage.db.records.find_one({"_id": 1})
    assert stored["status"] == "declined" and stored["decline_reason"] == "当天出差，请改日再约"


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_visitor_cancels_from_the_record_page_after_confirming(site, fakes, ctx, journey, request):
    rid = await journey(sign_in=False)
    async with phone(request.node.name) as p:
        page = p.page
        await wechat_open(p, site, fakes, "o-v1", "访客小张")
        await page.goto(f"{site}/h5/records/{rid}")
        await page.click("#cancel-visit")
        await page.wait_for_selector("#confirm .weui-dialog")
        await p.shot("cancel-confirm")
        await page.click("#keep-visit")  # changing one's mind keeps the visit
        assert await page.is_hidden("#confirm .weui-dialog")
        await page.click("#cancel-visit")
        await page.click("#confirm-cancel")
        await page.wait_for_selector(".page__title .status:has-text('已取消')")
        assert "本次预约已取消" in await page.inner_text("#ended")
        assert await page.locator("#cancel-visit").count() == 0
        await p.shot("cancelled")
        assert p.errors == []
    assert (await ctx.storage.db.records.find_one({"_id": rid}))["status"] == "cancelled"
