"""No input, however malformed, gets a 5xx: /v1 answers 400 in the envelope, pages a 400 page or their
first page (CONTRACT §3). Names refuse control and bidi characters."""
from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from tests.conftest import ADMIN_KEY, GATE_KEY, TEMPLATE_IDS

HUGE = "9" * 30  # far beyond int64
NAME_ATTACKS = ["张\u0000三", "\u202e三张", "张\u2066三", "张三\u001b[31m", "\u200f张三", "\u0085张三"]


def application(**fields) -> dict:
    now = int(time.time())
    return {"subject_type": 1, "name": "访客小张", "phone": "13900000001", "proposer": "13900000001",
            "interviewee": "李经理", "interviewee_phone": "13800000002", "start_time": now,
            "end_time": now + 3600, **fields}


def assert_400(resp) -> None:
    assert resp.status == 400, resp
    assert resp.json()["code"] == 400, resp


@pytest.mark.parametrize("path", [
    f"/v1/notifications?page={HUGE}",
    "/v1/notifications?page=99999999999999999999",
    "/v1/notifications?page=1e400",
    "/v1/notifications?page=%C2%B2",  # "²" is a digit to str.isdigit(), not to int()
    f"/v1/notifications?size={'9' * 5000}",
    f"/v1/visit/records?type=web&start_time={HUGE}",
    f"/v1/visit/records?type=web&end_time={HUGE}",
    "/v1/visit/records?type=web&start_time=2026-02-30%2000:00:00",
    f"/v1/auth/records?page={HUGE}",
])
@pytest.mark.gen_test
async def test_out_of_range_numbers_in_a_query_are_400(anonymous, path):
    assert_400(await anonymous.fetch(path, key=ADMIN_KEY))


@pytest.mark.gen_test
async def test_out_of_range_record_ids_are_400(anonymous):
    assert_400(await anonymous.fetch(f"/v1/visit/records/{HUGE}", "DELETE", key=ADMIN_KEY))
    assert_400(await anonymous.fetch(f"/v1/auth/{HUGE}", "PUT", key=ADMIN_KEY))


@pytest.mark.parametrize("times", [
    {"start_time": 10**30}, {"end_time": 10**30}, {"start_time": -1}, {"end_time": 1e400},
    {"start_time": "1" * 30}, {"start_time": "2026-13-01 00:00:00"}, {"start_time": True},
])
@pytest.mark.gen_test
async def test_out_of_range_times_in_an_application_are_400(bind_visitor, times):
    visitor = await bind_visitor()
    assert_400(await visitor.fetch("/v1/subject", "POST", json=application(**times)))


@pytest.mark.parametrize("path,method,key", [
    ("/v1/visit/qrcode", "POST", GATE_KEY),
    ("/v1/visit/signin", "POST", ADMIN_KEY),
    ("/v1/config/servers", "PUT", ADMIN_KEY),
    ("/v1/config/templates", "PUT", ADMIN_KEY),
])
@pytest.mark.parametrize("body", [
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b"[" * 60_000 + b"]" * 60_000,  # 120 KB: within every endpoint's limit but the gate's 8 KB
    b'{"qrcode": NaN, "phone": Infinity}',
])
@pytest.mark.gen_test
async def test_json_nested_too_deep_or_not_json_is_400(anonymous, path, method, key, body):
    resp = await anonymous.fetch(path, method, body=body, key=key, headers={"Content-Type": "application/json"})
    if path == "/v1/visit/qrcode" and len(body) > 8 * 1024:
        assert (resp.status, resp.json()["code"]) == (413, 413), resp  # refused on its headers
    else:
        assert_400(resp)


@pytest.mark.gen_test
async def test_json_nested_too_deep_is_400_for_a_wechat_user(bind_visitor):
    visitor = await bind_visitor()
    resp = await visitor.fetch("/v1/subject", "POST", body=b'{"a":' * 1000 + b"1" + b"}" * 1000,
                               headers={"Content-Type": "application/json"})
    assert_400(resp)


@pytest.mark.gen_test
async def test_null_is_not_an_absent_field(anonymous, configured):
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x" * 20, "gate": None}, key=GATE_KEY)
    assert_400(resp)
    resp = await anonymous.fetch("/v1/config/templates", "PUT", json={**TEMPLATE_IDS, "wechat_fields": None},
                                 key=ADMIN_KEY)
    assert_400(resp)
    assert "wechat_fields" in resp.json()["err_msg"]


@pytest.mark.gen_test
async def test_integers_in_json_are_numbers_and_strings_in_json_are_not_integers(bind_visitor):
    visitor = await bind_visitor()
    assert_400(await visitor.fetch("/v1/subject", "POST", json=application(purpose="2")))
    assert_400(await visitor.fetch("/v1/subject", "POST", json=application(subject_type=True)))


@pytest.mark.gen_test
async def test_a_lone_surrogate_is_400(bind_visitor):
    visitor = await bind_visitor()
    resp = await visitor.fetch("/v1/subject", "POST", body=b'{"name": "\\ud800"}',
                               headers={"Content-Type": "application/json"})
    assert_400(resp)


@pytest.mark.parametrize("name", NAME_ATTACKS)
@pytest.mark.gen_test
async def test_control_and_bidi_characters_are_refused_in_every_name(bind_visitor, bind_employee, wechat_login,
                                                                     anonymous, ctx, name):
    await bind_employee()
    visitor = await bind_visitor()
    for fields in ({"name": name}, {"interviewee": name}, {"come_from": name},
                   {"retinues": [{"name": name, "phone": "13700000011"}]}):
        assert_400(await visitor.fetch("/v1/subject", "POST", json=application(**fields)))
    for filter_name in ("name", "interviewee"):
        assert_400(await anonymous.fetch(f"/v1/visit/records?type=web&{filter_name}={quote(name)}", key=ADMIN_KEY))
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x" * 20, "gate": name}, key=GATE_KEY)
    assert_400(resp)
    newcomer = await wechat_login("o-newcomer")
    resp = await newcomer.fetch("/v1/subject/binding", "POST", json={
        "weixinUserId": "o-newcomer", "name": name, "phone": "13800000002", "code": "000000"})
    assert_400(resp)
    assert await ctx.storage.db.records.count_documents({}) == 0
    assert await ctx.bindings.get("o-newcomer") is None


@pytest.mark.gen_test
async def test_a_remark_may_have_line_breaks_but_no_bidi_override(bind_visitor, bind_employee):
    await bind_employee()
    visitor = await bind_visitor()
    ok = await visitor.fetch("/v1/subject", "POST", json=application(remark="第一行\n第二行"))
    assert ok.json()["code"] == 0, ok
    assert_400(await visitor.fetch("/v1/subject", "POST", json=application(remark="abc\u202edef")))


@pytest.mark.parametrize("query", ["page=abc", "page=1e400", f"page={HUGE}", "page=-1", "page=%C2%B2"])
@pytest.mark.gen_test
async def test_h5_records_with_a_malformed_page_show_the_first_page(bind_visitor, query):
    visitor = await bind_visitor()
    resp = await visitor.fetch("/h5/records?" + query)
    assert resp.status == 200, resp
    assert resp.text == (await visitor.fetch("/h5/records")).text


@pytest.mark.gen_test
async def test_h5_record_with_an_out_of_range_id_is_a_400_page(bind_visitor):
    visitor = await bind_visitor()
    resp = await visitor.fetch(f"/h5/records/{HUGE}")
    assert resp.status == 400
    assert resp.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("query", ["page=abc", "page=1e400", f"page={HUGE}", "page=0"])
@pytest.mark.gen_test
async def test_admin_records_with_a_malformed_page_show_the_first_page(admin_login, query):
    admin = await admin_login()
    resp = await admin.fetch("/admin/records?" + query)
    assert resp.status == 200, resp


@pytest.mark.parametrize("path", [f"/admin/notifications?page={HUGE}", f"/admin/passes?record={HUGE}",
                                  "/admin/passes?before=1e400", f"/admin/passes?skip={HUGE}&before=1"])
@pytest.mark.gen_test
async def test_admin_pages_with_out_of_range_numbers_are_not_a_server_error(admin_login, path):
    admin = await admin_login()
    resp = await admin.fetch(path)
    assert resp.status < 500, resp


@pytest.mark.gen_test
async def test_an_api_key_name_with_a_bidi_override_is_refused(admin_login, ctx):
    admin = await admin_login()
    resp = await admin.fetch("/admin/keys", "POST", form={"name": "闸机\u202e1", "role": "gate",
                                                          "_xsrf": admin.cookie("_xsrf")})
    assert resp.status == 400
    assert all("\u202e" not in key["name"] for key in await ctx.api_keys.list())


@pytest.mark.gen_test
async def test_query_and_form_values_that_are_not_utf8_are_400(anonymous):
    assert_400(await anonymous.fetch("/v1/notifications?status=%FF", key=ADMIN_KEY))
    resp = await anonymous.fetch("/v1/visit/signin", "POST", body=b"phone=%FF%FE", key=ADMIN_KEY,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_400(resp)


@pytest.mark.gen_test
async def test_query_and_form_values_are_checked_as_sent(anonymous):
    # Tornado's get_argument would turn the control character into a space and strip it away.
    assert_400(await anonymous.fetch("/v1/visit/records?type=web&name=%1B", key=ADMIN_KEY))
    assert_400(await anonymous.fetch("/v1/visit/records?type=%20web", key=ADMIN_KEY))
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", body=b"qrcode=abcdefghijklmnop&gate=%00", key=GATE_KEY,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_400(resp)
