"""Rate limits under attack: bursts of concurrent tries, SMS flooding, one phone written three ways,
and too many applications or invitations (CONTRACT §5)."""
import asyncio

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, last_code
from wxapp.errors import ApiError

PHONE = "13900000001"


@pytest.fixture
def burst(io_loop):
    """An HTTP client that really sends 64 requests at once (the default one queues beyond 10)."""
    client = AsyncHTTPClient(force_instance=True, max_clients=64)
    yield client
    client.close()


async def send_code(browser, phone):
    return await browser.fetch("/v1/sms/code", "POST", json={"phone": phone})


def codes_sent(fakes, phone=None):
    return [m for m in fakes.sms.sent if m["template_code"] == "SMS_CODE" and phone in (None, m["phone"])]


async def blocked_clients(redis, at_least: int) -> int:
    """Wait until Redis holds `at_least` clients paused by CLIENT PAUSE (or 2 s pass); how many it holds."""
    for _ in range(200):
        blocked = (await redis.info("clients"))["blocked_clients"]
        if blocked >= at_least:
            break
        await asyncio.sleep(0.01)
    return blocked


@pytest.mark.gen_test(timeout=30)
async def test_tries_held_up_together_are_judged_in_turn_and_the_sixth_is_not(wechat_login, fakes, configured, ctx):
    # Redis holds back every write while 39 wrong tries and then the right one arrive; once it lets
    # them go, five wrong ones void the code before the right one is looked at.
    browser = await wechat_login("o-v1")
    await send_code(browser, PHONE)
    good = last_code(fakes, PHONE)
    wrong = [f"{n:06d}" for n in range(100) if f"{n:06d}" != good][:39]
    with pytest.raises(ApiError):  # as in a server that has judged a code before: Redis knows the script
        await ctx.codes.check("13000000000", "000000")
    await ctx.redis.execute_command("CLIENT", "PAUSE", 10000, "WRITE")
    try:
        tries = [asyncio.ensure_future(ctx.codes.check(PHONE, code)) for code in wrong]
        assert await blocked_clients(ctx.redis, 39) == 39
        tries.append(asyncio.ensure_future(ctx.codes.check(PHONE, good)))
        await blocked_clients(ctx.redis, 40)
    finally:
        await ctx.redis.execute_command("CLIENT", "UNPAUSE")
    results = await asyncio.gather(*tries, return_exceptions=True)
    assert [getattr(r, "code", r) for r in results] == [400] * 40
    assert all(isinstance(r, ApiError) and r.message == "验证码错误或已过期" for r in results)


@pytest.mark.gen_test
async def test_one_handset_written_three_ways_is_one_phone_for_codes_and_bindings(wechat_login, fakes, configured,
                                                                                   ctx):
    browser = await wechat_login("o-v1")
    assert (await send_code(browser, "+86 139-0000-0001")).json()["code"] == 0
    for same in ("8613900000001", PHONE):
        again = await send_code(browser, same)
        assert again.status == 429
        assert "1 分钟" in again.json()["err_msg"]
    assert [m["phone"] for m in codes_sent(fakes)] == [PHONE]
    resp = await browser.fetch("/v1/visitor/binding", "POST", json={
        "weixinUserId": "o-v1", "phone": "8613900000001", "code": last_code(fakes, PHONE)})
    assert resp.json()["data"]["phone"] == PHONE
    assert (await ctx.storage.db.bindings.find_one({"_id": "o-v1"}))["phone"] == PHONE


@pytest.mark.gen_test
async def test_a_handsets_daily_codes_are_counted_together_whatever_its_form(wechat_login, fakes, configured, ctx):
    browser = await wechat_login("o-v1")
    forms = ["+8613900000001", "8613900000001", PHONE]
    for n in range(10):
        await ctx.redis.delete(f"smscode:wait:{PHONE}")  # a minute passes
        assert (await send_code(browser, forms[n % 3])).json()["code"] == 0
    await ctx.redis.delete(f"smscode:wait:{PHONE}")
    eleventh = await send_code(browser, forms[1])
    assert eleventh.status == 429
    assert "明天" in eleventh.json()["err_msg"]
    assert len(codes_sent(fakes, PHONE)) == 10


@pytest.mark.gen_test(timeout=30)
async def test_one_wechat_user_gets_codes_for_at_most_five_phones_an_hour(wechat_login, fakes, configured, burst):
    browser = await wechat_login("o-v1")
    browser.client = burst
    phones = [f"1390000{n:04d}" for n in range(20)]
    answers = await asyncio.gather(*[send_code(browser, phone) for phone in phones])
    assert sorted(a.status for a in answers) == [200] * 5 + [429] * 15
    refused = next(a for a in answers if a.status == 429).json()
    assert refused == {"code": 429, "err_msg": "1 小时内最多向 5 个不同的手机号发送验证码，请稍后再试"}
    assert len(codes_sent(fakes)) == 5
    # A phone already asked for in this hour is not a new one.
    sent_to = codes_sent(fakes)[0]["phone"]
    assert (await send_code(browser, sent_to)).json()["err_msg"] == "验证码发送过于频繁，请 1 分钟后再试"


@pytest.mark.gen_test(timeout=30)
async def test_one_client_address_gets_at_most_twenty_codes_an_hour(wechat_login, fakes, configured):
    users = [await wechat_login(f"o-v{n}") for n in range(5)]
    statuses = []
    for n in range(21):
        statuses.append((await send_code(users[n // 5], f"1370000{n:04d}")).status)
    assert statuses == [200] * 20 + [429]
    last = await send_code(users[4], "13700009999")
    assert last.json() == {"code": 429, "err_msg": "当前网络发送验证码过于频繁，请 1 小时后再试"}
    assert len(codes_sent(fakes)) == 20


async def login_form(browser):
    """Open the login page once (for its XSRF cookie); returns a function that posts a try."""
    await browser.fetch("/admin/login")

    async def attempt(password, username=ADMIN_USER, address=None):
        return await browser.fetch("/admin/login", "POST", headers={"X-Real-Ip": address} if address else None,
                                   form={"username": username, "password": password, "_xsrf": browser.cookie("_xsrf")})
    return attempt


@pytest.mark.gen_test(timeout=30)
async def test_forty_wrong_passwords_at_once_judge_five_and_the_right_one_after_them_is_refused(client, ctx,
                                                                                              burst):
    # Redis holds back every write while the 40 wrong tries and then the right one arrive, so that
    # they are counted in the order they came, whatever the order of their answers.
    browser = client()
    browser.client = burst
    attempt = await login_form(browser)
    assert await ctx.login_throttle.attempt("nobody", "192.0.2.250") is None  # Redis knows the script
    await ctx.redis.execute_command("CLIENT", "PAUSE", 10000, "WRITE")
    try:
        wrong = [asyncio.ensure_future(attempt(f"wrong-{n}")) for n in range(40)]
        await blocked_clients(ctx.redis, 40)
        right = asyncio.ensure_future(attempt(ADMIN_PASSWORD))
        await blocked_clients(ctx.redis, 41)
    finally:
        await ctx.redis.execute_command("CLIENT", "UNPAUSE")
    statuses = [a.status for a in await asyncio.gather(*wrong)]
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
    assert (await right).status == 429
    assert browser.cookie("admin_session") is None


@pytest.mark.gen_test
async def test_failing_from_one_address_does_not_lock_the_admin_out_of_another(client):
    attempt = await login_form(client())
    for _ in range(5):
        assert (await attempt("wrong", address="203.0.113.7")).status == 401
    locked = await attempt(ADMIN_PASSWORD, address="203.0.113.7")
    assert locked.status == 429 and "15 分钟" in locked.text
    assert (await attempt(ADMIN_PASSWORD, address="198.51.100.2")).status == 302


@pytest.mark.gen_test(timeout=60)
async def test_failing_from_many_addresses_locks_the_name_except_where_the_admin_logged_in_before(client, burst):
    attempt = await login_form(client())
    assert (await attempt(ADMIN_PASSWORD, address="198.51.100.2")).status == 302  # the admin's office
    attacker = client()
    attacker.client = burst
    attempt = await login_form(attacker)
    answers = await asyncio.gather(*[attempt("wrong", address=f"203.0.113.{n % 20}") for n in range(40)])
    statuses = [a.status for a in answers]
    assert statuses.count(401) == 30 and statuses.count(429) == 10, statuses
    elsewhere = await attempt(ADMIN_PASSWORD, address="192.0.2.1")
    assert elsewhere.status == 429 and "以前登录过的网络" in elsewhere.text
    assert (await attempt(ADMIN_PASSWORD, address="198.51.100.2")).status == 302


def application(visitor_phone, start, *, interviewee="李经理", interviewee_phone="13800000002", proposer=None):
    return {"subject_type": 1, "name": "张三", "phone": visitor_phone, "proposer": proposer or visitor_phone,
            "interviewee": interviewee, "interviewee_phone": interviewee_phone, "start_time": start,
            "end_time": start + 3600, "purpose": 2}


def reminders(fakes, employee_phone="13800000002", openid="o-e1"):
    sms = [m for m in fakes.sms.sent if m["phone"] == employee_phone and m["template_code"] != "SMS_CODE"]
    wechat = [m for m in fakes.wechat.templates_sent if m["touser"] == openid]
    return len(sms), len(wechat)


@pytest.mark.gen_test(timeout=60)
async def test_fifteen_applications_at_once_make_ten_records_and_one_reminder(bind_visitor, bind_employee, ctx,
                                                                              fakes, clock, burst):
    employee = await bind_employee("o-e1", "李经理", "13800000002")
    visitor = await bind_visitor("o-v1", PHONE)
    visitor.client = burst
    now = int(clock())
    unknown = await visitor.fetch("/v1/subject", "POST", json=application(
        PHONE, now + 3600, interviewee="无此人", interviewee_phone="13800009999"))
    assert unknown.status == 404  # refused, so not counted
    answers = await asyncio.gather(*[visitor.fetch("/v1/subject", "POST", json=application(PHONE, now + 3600 + n))
                                     for n in range(15)])
    assert sorted(a.status for a in answers) == [200] * 10 + [429] * 5
    refused = next(a for a in answers if a.status == 429).json()
    assert refused == {"code": 429, "err_msg": "今天的访客申请次数已达上限（10 次），请明天再试"}
    listed = (await employee.fetch("/v1/auth/records?phone=13800000002&size=20")).json()
    assert listed["page"]["count"] == 10  # every application is listed for the employee
    await ctx.delivery.run_once()
    assert reminders(fakes) == (1, 1)


@pytest.mark.gen_test(timeout=30)
async def test_a_visitor_reminds_an_employee_again_only_after_a_few_minutes(bind_visitor, bind_employee, ctx,
                                                                            fakes, clock):
    await bind_employee("o-e1", "李经理", "13800000002")
    visitor = await bind_visitor("o-v1", PHONE)
    other = await bind_visitor("o-v2", "13900000002")
    start = int(clock()) + 86400
    for n in range(3):
        assert (await visitor.fetch("/v1/subject", "POST", json=application(PHONE, start + n))).status == 200
        clock.advance(100)
    assert (await other.fetch("/v1/subject", "POST", json=application("13900000002", start))).status == 200
    await ctx.delivery.run_once()
    assert reminders(fakes) == (2, 2)  # one for each visitor
    clock.advance(301)
    assert (await visitor.fetch("/v1/subject", "POST", json=application(PHONE, start + 9))).status == 200
    await ctx.delivery.run_once()
    assert reminders(fakes) == (3, 3)


@pytest.mark.gen_test(timeout=60)
async def test_an_employee_invites_at_most_thirty_visitors_a_day(bind_employee, fakes, clock, burst):
    employee = await bind_employee("o-e1", "李经理", "13800000002")
    employee.client = burst
    start = int(clock()) + 3600
    answers = await asyncio.gather(*[employee.fetch("/v1/subject", "POST", json=application(
        f"1370000{n:04d}", start, proposer="13800000002")) for n in range(35)])
    assert sorted(a.status for a in answers) == [200] * 30 + [429] * 5
    refused = next(a for a in answers if a.status == 429).json()
    assert refused == {"code": 429, "err_msg": "今天的邀约次数已达上限（30 次），请明天再试"}
    clock.advance(86400)  # tomorrow
    again = await employee.fetch("/v1/subject", "POST", json=application("13700009999", start + 86400,
                                                                         proposer="13800000002"))
    assert again.status == 200
