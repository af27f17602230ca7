"""The settings API (seed admin 1.1/1.2, 2.1/2.2; CONTRACT §5)."""
import pytest

from tests.conftest import ADMIN_KEY
from wxapp.events import TEMPLATE_ID_FIELDS
from wxapp.security import SecretBox

SERVERS = {
    "koala_ip": "192.168.18.53",
    "koala_username": "test@megvii.com",
    "koala_password": "admin123456",
    "cloud_url": "https://visit.example.com/",
}
TEMPLATES = {name: f"tpl-{i}" for i, name in enumerate(TEMPLATE_ID_FIELDS)}


@pytest.mark.gen_test
async def test_servers_are_empty_before_anything_is_saved(anonymous):
    resp = await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY)
    assert resp.status == 200
    assert resp.json() == {"code": 0, "err_msg": "", "data": {
        "koala_ip": "", "koala_username": "", "koala_password": "", "cloud_url": ""}}


@pytest.mark.gen_test
async def test_saved_servers_read_back_with_the_password_masked(anonymous):
    put = await anonymous.fetch("/v1/config/servers", "PUT", json=SERVERS, key=ADMIN_KEY)
    assert put.json()["code"] == 0
    expected = {**SERVERS, "koala_password": "******", "cloud_url": "https://visit.example.com"}
    assert put.json()["data"] == expected
    get = await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY)
    assert get.json()["data"] == expected
    assert "admin123456" not in get.text


@pytest.mark.gen_test
async def test_koala_password_is_encrypted_at_rest(anonymous, ctx):
    await anonymous.fetch("/v1/config/servers", "PUT", json=SERVERS, key=ADMIN_KEY)
    doc = await ctx.storage.db.settings.find_one({"_id": "servers"})
    assert "admin123456" not in repr(doc)
    assert SecretBox(ctx.config.secret_key).decrypt(doc["koala_password_enc"]) == "admin123456"
    with pytest.raises(ValueError):
        SecretBox("another-secret").decrypt(doc["koala_password_enc"])
    account = await ctx.system_settings.koala_account()
    assert (account.base_url, account.username, account.password) == (
        "http://192.168.18.53", "test@megvii.com", "admin123456")


@pytest.mark.gen_test
async def test_masked_password_in_a_put_keeps_the_stored_one(anonymous, ctx):
    await anonymous.fetch("/v1/config/servers", "PUT", json=SERVERS, key=ADMIN_KEY)
    resp = await anonymous.fetch("/v1/config/servers", "PUT", key=ADMIN_KEY,
                                 json={**SERVERS, "koala_username": "other@megvii.com", "koala_password": "******"})
    assert resp.json()["data"]["koala_username"] == "other@megvii.com"
    account = await ctx.system_settings.koala_account()
    assert account.password == "admin123456"
    assert account.base_url == "http://192.168.18.53"


@pytest.mark.gen_test
async def test_a_new_password_replaces_the_stored_one(anonymous, ctx):
    await anonymous.fetch("/v1/config/servers", "PUT", json=SERVERS, key=ADMIN_KEY)
    await anonymous.fetch("/v1/config/servers", "PUT", json={**SERVERS, "koala_password": "n3w"}, key=ADMIN_KEY)
    assert (await ctx.system_settings.koala_account()).password == "n3w"


@pytest.mark.parametrize("koala_ip", ["koala.local", "192.168.1.10:8080", "https://koala.example.com:8443"])
@pytest.mark.gen_test
async def test_koala_address_may_be_host_host_port_or_url(anonymous, koala_ip):
    resp = await anonymous.fetch("/v1/config/servers", "PUT", json={**SERVERS, "koala_ip": koala_ip}, key=ADMIN_KEY)
    assert resp.json()["code"] == 0
    assert resp.json()["data"]["koala_ip"] == koala_ip


@pytest.mark.parametrize("field", list(SERVERS))
@pytest.mark.gen_test
async def test_put_servers_requires_every_field(anonymous, field):
    body = {k: v for k, v in SERVERS.items() if k != field}
    resp = await anonymous.fetch("/v1/config/servers", "PUT", json=body, key=ADMIN_KEY)
    assert resp.status == 400
    assert resp.json() == {"code": 400, "err_msg": f"缺少参数 {field}"}


@pytest.mark.parametrize("field,value,message", [
    ("koala_ip", "not a host!", "koala_ip"),
    ("koala_ip", "ftp://koala", "koala_ip"),
    ("koala_ip", "koala:99999", "koala_ip"),
    ("cloud_url", "visit.example.com", "cloud_url"),
    ("cloud_url", "javascript:alert(1)", "cloud_url"),
    ("koala_username", "", "koala_username"),
    ("koala_password", 123456, "koala_password"),
    ("koala_username", "x" * 129, "koala_username"),
])
@pytest.mark.gen_test
async def test_bad_server_settings_are_refused_and_change_nothing(anonymous, field, value, message):
    await anonymous.fetch("/v1/config/servers", "PUT", json=SERVERS, key=ADMIN_KEY)
    resp = await anonymous.fetch("/v1/config/servers", "PUT", json={**SERVERS, field: value}, key=ADMIN_KEY)
    assert resp.status == 400
    assert resp.json()["code"] == 400
    assert message in resp.json()["err_msg"]
    after = await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY)
    assert after.json()["data"]["koala_ip"] == SERVERS["koala_ip"]


@pytest.mark.gen_test
async def test_settings_accept_a_urlencoded_form(anonymous):
    resp = await anonymous.fetch("/v1/config/servers", "PUT", form=SERVERS, key=ADMIN_KEY)
    assert resp.json()["code"] == 0
    assert resp.json()["data"]["koala_username"] == "test@megvii.com"


@pytest.mark.gen_test
async def test_templates_default_to_empty(anonymous):
    resp = await anonymous.fetch("/v1/config/templates", key=ADMIN_KEY)
    data = resp.json()["data"]
    assert {name: data[name] for name in TEMPLATE_ID_FIELDS} == {name: "" for name in TEMPLATE_ID_FIELDS}
    assert data["verify_code_sms_id"] == ""
    assert data["wechat_fields"] == {}


@pytest.mark.gen_test
async def test_templates_round_trip_with_field_mapping(anonymous):
    mapping = {"approval_pass_to_visitor": {"thing1": "visitor_name", "time2": "start_time"}}
    body = {**TEMPLATES, "verify_code_sms_id": "SMS_1", "wechat_fields": mapping}
    put = await anonymous.fetch("/v1/config/templates", "PUT", json=body, key=ADMIN_KEY)
    assert put.json() == {"code": 0, "err_msg": "", "data": {**body, "reminder_hour": 8}}
    get = await anonymous.fetch("/v1/config/templates", key=ADMIN_KEY)
    assert get.json()["data"] == {**body, "reminder_hour": 8}


@pytest.mark.gen_test
async def test_templates_put_without_optional_fields_keeps_them(anonymous):
    mapping = {"signin_to_visitor": {"thing1": "visitor_name"}}
    await anonymous.fetch("/v1/config/templates", "PUT", key=ADMIN_KEY,
                          json={**TEMPLATES, "verify_code_sms_id": "SMS_9", "wechat_fields": mapping})
    resp = await anonymous.fetch("/v1/config/templates", "PUT", key=ADMIN_KEY,
                                 json={**TEMPLATES, "signin_to_visitor_sms_id": ""})
    data = resp.json()["data"]
    assert data["signin_to_visitor_sms_id"] == ""
    assert data["verify_code_sms_id"] == "SMS_9"
    assert data["wechat_fields"] == mapping


@pytest.mark.parametrize("body,fragment", [
    ({k: v for k, v in TEMPLATES.items() if k != "signin_to_visitor_wechat_id"}, "缺少参数 signin_to_visitor_wechat_id"),
    ({**TEMPLATES, "wechat_fields": {"no_such_event": {}}}, "no_such_event"),
    ({**TEMPLATES, "wechat_fields": {"signin_to_visitor": {"thing1": "salary"}}}, "salary"),
    ({**TEMPLATES, "wechat_fields": {"signin_to_visitor": {"bad key!": "visitor_name"}}}, "bad key!"),
    ({**TEMPLATES, "wechat_fields": "thing1"}, "wechat_fields 应为对象"),
    ({**TEMPLATES, "approval_pass_to_visitor_sms_id": ["SMS_1"]}, "approval_pass_to_visitor_sms_id 应为字符串"),
])
@pytest.mark.gen_test
async def test_bad_templates_are_refused(anonymous, body, fragment):
    resp = await anonymous.fetch("/v1/config/templates", "PUT", json=body, key=ADMIN_KEY)
    assert resp.status == 400
    assert fragment in resp.json()["err_msg"]
    after = await anonymous.fetch("/v1/config/templates", key=ADMIN_KEY)
    assert after.json()["data"]["signin_to_visitor_wechat_id"] == ""


@pytest.mark.gen_test
async def test_admin_session_changes_settings_with_an_xsrf_token(admin_login):
    browser = await admin_login()
    resp = await browser.fetch("/v1/config/servers", "PUT", json=SERVERS)
    assert resp.json()["code"] == 0
    refused = await browser.fetch("/v1/config/servers", "PUT", json=SERVERS, xsrf=False)
    assert refused.status == 403
    assert "XSRF" in refused.json()["err_msg"]
    read = await browser.fetch("/v1/config/servers", xsrf=False)
    assert read.json()["code"] == 0
