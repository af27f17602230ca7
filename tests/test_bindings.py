"""Bindings (seed H5 1, 1.1, 2, 2.1, 8, 9) and their SMS verification codes (CONTRACT §5)."""
import pytest

from tests.conftest import last_code


async def send_code(browser, phone):
    return await browser.fetch("/v1/sms/code", "POST", json={"phone": phone})


@pytest.mark.gen_test
async def test_visitor_binds_a_phone_with_the_code_sent_by_sms(wechat_login, fakes, configured):
    browser = await wechat_login("o-v1", "访客小张")
    assert (await send_code(browser, "139 0000-0001")).json() == {"code": 0, "err_msg": ""}
    sms = fakes.sms.sent[-1]
    assert (sms["phone"], sms["template_code"], sms["sign_name"]) == ("13900000001", "SMS_CODE", "访客预约")
    assert len(sms["params"]["code"]) == 6 and sms["params"]["code"].isdigit()
    resp = await browser.fetch("/v1/visitor/binding", "POST", json={
        "weixinUserId": "o-v1", "phone": "13900000001", "code": sms["params"]["code"]})
    expected = {"nick": "访客小张", "avatar": "https://wx.qlogo.cn/o-v1.png", "phone": "13900000001"}
    assert resp.json() == {"code": 0, "err_msg": "", "data": expected}
    assert (await browser.fetch("/v1/visitor/binding?weixinUserId=o-v1")).json()["data"] == expected
    is_binding = await browser.fetch("/v1/wechat/is_binding?weixinUserId=o-v1")
    assert is_binding.json()["data"] == {"type": "visitor", "name": "访客小张", "department": "",
                                         "subject_id": -1, "avatar": expected["avatar"], "phone": "13900000001"}
    # An employee's query answers "not bound" for a visitor.
    assert (await browser.fetch("/v1/subject/binding?weixinUserId=o-v1")).json()["data"] == {}


@pytest.mark.gen_test
async def test_not_bound_reads_as_empty_data_or_404(wechat_login, configured):
    browser = await wechat_login("o-new")
    assert (await browser.fetch("/v1/visitor/binding?weixinUserId=o-new")).json() == {
        "code": 0, "err_msg": "", "data": {}}
    assert (await browser.fetch("/v1/subject/binding?weixinUserId=o-new")).json()["data"] == {}
    resp = await browser.fetch("/v1/wechat/is_binding?weixinUserId=o-new")
    assert resp.status == 404
    assert resp.json() == {"code": 404, "err_msg": "没有该微信号绑定的用户"}


@pytest.mark.gen_test
async def test_wrong_code_is_refused_and_the_fifth_wrong_try_voids_the_code(wechat_login, fakes, configured):
    browser = await wechat_login("o-v1")
    await send_code(browser, "13900000001")
    good = last_code(fakes, "13900000001")
    wrong = "000000" if good != "000000" else "111111"
    body = {"weixinUserId": "o-v1", "phone": "13900000001"}
    for _ in range(4):
        resp = await browser.fetch("/v1/visitor/binding", "POST", json={**body, "code": wrong})
        assert resp.status == 400
        assert resp.json()["err_msg"] == "验证码错误或已过期"
    missing = await browser.fetch("/v1/visitor/binding", "POST", json=body)
    assert missing.json()["err_msg"] == "验证码错误或已过期"
    voided = await browser.fetch("/v1/visitor/binding", "POST", json={**body, "code": good})
    assert voided.status == 400
    assert (await browser.fetch("/v1/wechat/is_binding?weixinUserId=o-v1")).status == 404


@pytest.mark.gen_test
async def test_a_code_expires_after_five_minutes(wechat_login, fakes, configured, ctx):
    browser = await wechat_login("o-v1")
    await send_code(browser, "13900000001")
    await ctx.redis.expire("smscode:13900000001", 0)  # what five minutes do
    resp = await browser.fetch("/v1/visitor/binding", "POST", json={
        "weixinUserId": "o-v1", "phone": "13900000001", "code": last_code(fakes, "13900000001")})
    assert resp.status == 400


@pytest.mark.gen_test
async def test_codes_are_limited_to_one_a_minute_and_ten_a_day(wechat_login, fakes, configured, ctx):
    browser = await wechat_login("o-v1")
    assert (await send_code(browser, "13900000001")).json()["code"] == 0
    again = await send_code(browser, "13900000001")
    assert again.status == 429
    assert "1 分钟" in again.json()["err_msg"]
    for _ in range(9):
        await ctx.redis.delete("smscode:wait:13900000001")  # a minute passes
        assert (await send_code(browser, "13900000001")).json()["code"] == 0
    await ctx.redis.delete("smscode:wait:13900000001")
    eleventh = await send_code(browser, "13900000001")
    assert eleventh.status == 429
    assert "明天" in eleventh.json()["err_msg"]
    assert len([m for m in fakes.sms.sent if m["phone"] == "13900000001"]) == 10


@pytest.mark.parametrize("phone", ["12345678", "+1 415 555 0100", "abc"])
@pytest.mark.gen_test
async def test_codes_go_only_to_mainland_mobiles(wechat_login, fakes, configured, phone):
    browser = await wechat_login("o-v1")
    resp = await send_code(browser, phone)
    assert resp.status == 400
    assert "phone" in resp.json()["err_msg"]
    assert fakes.sms.sent == []


@pytest.mark.gen_test
async def test_sms_failure_is_502_and_the_phone_may_try_again(wechat_login, fakes, configured):
    browser = await wechat_login("o-v1")
    fakes.sms.fail_next(1, status=500)
    resp = await send_code(browser, "13900000001")
    assert resp.status == 502
    assert resp.json()["err_msg"] == "短信发送失败，请稍后再试"
    assert (await send_code(browser, "13900000001")).json()["code"] == 0


@pytest.mark.gen_test
async def test_employee_binding_matches_koala_and_serves_the_copied_avatar(bind_employee, fakes, anonymous):
    browser = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    data = (await browser.fetch("/v1/subject/binding?weixinUserId=o-e1")).json()["data"]
    subject = next(s for s in fakes.koala.employees() if s["phone"] == "13800000002")
    assert data["name"] == "李经理" and data["department"] == "市场部"
    assert data["subject_id"] == subject["id"] and data["phone"] == "13800000002"
    assert data["avatar"].startswith("https://visit.example.com/avatar/")
    image = await anonymous.fetch(data["avatar"])
    assert image.status == 200
    assert image.headers["Content-Type"] == "image/jpeg"
    assert image.body == fakes.koala.avatar_bytes(subject)


@pytest.mark.gen_test
async def test_unknown_employee_is_404_and_the_code_stays_valid(wechat_login, fakes, configured):
    browser = await wechat_login("o-e1")
    await send_code(browser, "13800000002")
    body = {"weixinUserId": "o-e1", "name": "李经理", "phone": "13800000002",
            "code": last_code(fakes, "13800000002")}
    resp = await browser.fetch("/v1/subject/binding", "POST", json=body)
    assert resp.status == 404
    assert resp.json()["err_msg"].startswith("未找到该员工")
    fakes.koala.add_employee("李经理", "13800000002", department="市场部")
    assert (await browser.fetch("/v1/subject/binding", "POST", json=body)).json()["code"] == 0


@pytest.mark.gen_test
async def test_employee_name_must_match_koala_exactly(wechat_login, fakes, configured):
    fakes.koala.add_employee("李经理", "13800000002")
    browser = await wechat_login("o-e1")
    await send_code(browser, "13800000002")
    resp = await browser.fetch("/v1/subject/binding", "POST", json={
        "weixinUserId": "o-e1", "name": "李", "phone": "13800000002", "code": last_code(fakes, "13800000002")})
    assert resp.status == 404


@pytest.mark.gen_test
async def test_koala_down_during_employee_binding_is_502(wechat_login, fakes, configured):
    fakes.koala.add_employee("李经理", "13800000002")
    browser = await wechat_login("o-e1")
    await send_code(browser, "13800000002")
    fakes.koala.fail_next(5, status=500)
    resp = await browser.fetch("/v1/subject/binding", "POST", json={
        "weixinUserId": "o-e1", "name": "李经理", "phone": "13800000002", "code": last_code(fakes, "13800000002")})
    assert resp.status == 502
    assert "考拉" in resp.json()["err_msg"]


@pytest.mark.gen_test
async def test_a_phone_is_bound_to_one_wechat_user_per_kind(bind_visitor, wechat_login, fakes, ctx):
    await bind_visitor("o-v1", "13900000001")
    other = await wechat_login("o-v2")
    await ctx.redis.delete("smscode:wait:13900000001")  # a minute later
    assert (await send_code(other, "13900000001")).json()["code"] == 0
    resp = await other.fetch("/v1/visitor/binding", "POST", json={
        "weixinUserId": "o-v2", "phone": "13900000001", "code": last_code(fakes, "13900000001")})
    assert resp.status == 409
    assert "已被其他微信绑定" in resp.json()["err_msg"]


@pytest.mark.gen_test
async def test_binding_as_the_other_kind_needs_unbinding_first(bind_visitor, fakes, ctx):
    browser = await bind_visitor("o-x", "13900000001")
    fakes.koala.add_employee("王五", "13800000009")
    await send_code(browser, "13800000009")
    body = {"weixinUserId": "o-x", "name": "王五", "phone": "13800000009", "code": last_code(fakes, "13800000009")}
    refused = await browser.fetch("/v1/subject/binding", "POST", json=body)
    assert refused.status == 409
    assert "请先解除绑定" in refused.json()["err_msg"]
    assert (await browser.fetch("/v1/subject/binding/o-x", "DELETE")).json() == {"code": 0, "err_msg": ""}
    assert (await browser.fetch("/v1/wechat/is_binding?weixinUserId=o-x")).status == 404
    bound = await browser.fetch("/v1/subject/binding", "POST", json=body)
    assert bound.json()["code"] == 0
    assert (await browser.fetch("/v1/wechat/is_binding?weixinUserId=o-x")).json()["data"]["type"] == "employee"


@pytest.mark.gen_test
async def test_binding_again_with_the_same_phone_is_a_harmless_success(bind_visitor):
    browser = await bind_visitor("o-v1", "13900000001")
    resp = await browser.fetch("/v1/visitor/binding", "POST", json={"weixinUserId": "o-v1", "phone": "13900000001"})
    assert resp.json()["data"]["phone"] == "13900000001"


@pytest.mark.gen_test
async def test_unbinding_twice_is_404(bind_visitor):
    browser = await bind_visitor("o-v1", "13900000001")
    assert (await browser.fetch("/v1/subject/binding/o-v1", "DELETE")).status == 200
    assert (await browser.fetch("/v1/subject/binding/o-v1", "DELETE")).status == 404


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/visitor/binding?weixinUserId=o-someone-else", None),
    ("GET", "/v1/subject/binding?weixinUserId=o-someone-else", None),
    ("GET", "/v1/wechat/is_binding?weixinUserId=o-someone-else", None),
    ("POST", "/v1/visitor/binding", {"weixinUserId": "o-someone-else", "phone": "13900000001", "code": "000000"}),
    ("DELETE", "/v1/subject/binding/o-someone-else", None),
])
@pytest.mark.gen_test
async def test_a_user_acts_only_on_their_own_weixin_user_id(wechat_login, configured, method, path, body):
    browser = await wechat_login("o-me")
    resp = await browser.fetch(path, method, json=body)
    assert resp.status == 403
    assert resp.json()["err_msg"] == "weixinUserId 与当前登录的微信用户不一致"


@pytest.mark.config(sms_backend="off")
@pytest.mark.gen_test
async def test_with_sms_off_binding_needs_no_code(wechat_login, configured, fakes):
    browser = await wechat_login("o-v1")
    resp = await browser.fetch("/v1/visitor/binding", "POST", json={"weixinUserId": "o-v1", "phone": "13900000001"})
    assert resp.json()["code"] == 0
    assert (await send_code(browser, "13900000001")).status == 400
    assert fakes.sms.sent == []
