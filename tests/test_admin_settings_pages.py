"""/admin/settings, /admin/keys and /admin/users over HTTP: forms, validation, and their effect
seen from outside (the settings API, API keys at work, logging in)."""
import re

import pytest

from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, ADMIN_USER, CLOUD_URL
from wxapp.events import TEMPLATE_ID_FIELDS

PAGES = ["/admin/settings", "/admin/keys", "/admin/users"]
FORMS = ["/admin/settings/servers", "/admin/settings/koala-test", "/admin/settings/templates", "/admin/keys",
         "/admin/users", "/admin/users/password"]
TEMPLATES = {name: f"TPL_{i}" for i, name in enumerate(TEMPLATE_ID_FIELDS)}


async def post(browser, path, **form):
    """Send a form as the page does, with its XSRF token."""
    return await browser.fetch(path, "POST", form={**form, "_xsrf": browser.cookie("_xsrf")})


def koala_form(fakes, **changes):
    """The servers form filled in for the local Koala."""
    return {"koala_ip": fakes.koala.url.removeprefix("http://").rstrip("/"), "koala_username": fakes.koala.username,
            "koala_password": fakes.koala.password, "cloud_url": CLOUD_URL, **changes}


async def api_settings(anonymous, name):
    return (await anonymous.fetch(f"/v1/config/{name}", key=ADMIN_KEY)).json()["data"]


# --- login and XSRF ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
@pytest.mark.gen_test
async def test_every_page_needs_an_admin_login(anonymous, path):
    resp = await anonymous.fetch(path)
    assert resp.status == 302
    assert resp.location == "/admin/login?next=" + path


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.gen_test
async def test_a_form_sent_without_a_session_changes_nothing(anonymous, ctx, path):
    await anonymous.fetch("/admin/login")  # for an XSRF cookie
    resp = await post(anonymous, path, name="x", role="gate", username="intruder", password="p" * 10,
                      password2="p" * 10)
    assert resp.status == 302
    assert resp.location.startswith("/admin/login?next=")
    assert await ctx.storage.db.admins.count_documents({}) == 1
    assert len(await ctx.api_keys.list()) == 3


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.gen_test
async def test_a_form_without_its_xsrf_token_is_refused(admin_login, ctx, path):
    browser = await admin_login()
    resp = await browser.fetch(path, "POST", form={"name": "x", "role": "gate"}, xsrf=False)
    assert resp.status == 403
    assert len(await ctx.api_keys.list()) == 3


# --- servers ----------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_settings_page_shows_the_stored_servers_without_the_password(admin_login, configured, fakes):
    page = await (await admin_login()).fetch("/admin/settings")
    assert page.status == 200
    assert f'value="{CLOUD_URL}"' in page.text
    assert fakes.koala.password not in page.text
    assert "已设置，留空则不修改" in page.text
    for name in TEMPLATE_ID_FIELDS:
        assert f'name="{name}" value="TPL_{name}"' in page.text


@pytest.mark.gen_test
async def test_saved_servers_show_in_the_api_and_an_empty_password_keeps_the_stored_one(
        admin_login, anonymous, configured, fakes):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/servers", **koala_form(fakes, koala_password="",
                                                                          cloud_url="https://new.example.com/"))
    assert resp.status == 302
    assert resp.location == "/admin/settings?done=servers_saved"
    assert (await api_settings(anonymous, "servers"))["cloud_url"] == "https://new.example.com"
    assert (await configured.system_settings.koala_account()).password == fakes.koala.password
    page = await browser.fetch(resp.location)
    assert "服务器设置已保存" in page.text
    test = await post(browser, "/admin/settings/koala-test", **koala_form(fakes, koala_password=""))
    assert "连接成功：已登录考拉并读取员工列表" in test.text


@pytest.mark.gen_test
async def test_a_new_password_replaces_the_stored_one(admin_login, configured, fakes):
    browser = await admin_login()
    await post(browser, "/admin/settings/servers", **koala_form(fakes, koala_password="another-one"))
    assert (await configured.system_settings.koala_account()).password == "another-one"


@pytest.mark.parametrize("field,value,message", [
    ("koala_ip", "not a host!", "考拉主机地址应为主机名、IP、主机:端口 或完整网址"),
    ("cloud_url", "visit.example.com", "本系统对外网址应为 http:// 或 https:// 开头的网址"),
    ("koala_username", "", "考拉用户名不能为空"),
])
@pytest.mark.gen_test
async def test_bad_servers_are_shown_again_with_the_error_and_not_saved(admin_login, anonymous, fakes, field,
                                                                        value, message):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/servers", **koala_form(fakes, **{field: value}))
    assert resp.status == 400
    assert message in resp.text
    assert 'is-invalid" id="' + field in resp.text
    assert f'value="{value}"' in resp.text or not value
    assert fakes.koala.password not in resp.text
    assert (await api_settings(anonymous, "servers"))["koala_ip"] == ""


@pytest.mark.gen_test
async def test_a_password_is_required_while_none_is_stored(admin_login, fakes):
    resp = await post(await admin_login(), "/admin/settings/servers", **koala_form(fakes, koala_password=""))
    assert resp.status == 400
    assert "考拉密码不能为空" in resp.text


# --- Koala connection test --------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_koala_test_uses_the_entered_values_without_saving_them(admin_login, anonymous, fakes):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/koala-test", **koala_form(fakes, cloud_url=""))
    assert resp.status == 200
    assert "连接成功：已登录考拉并读取员工列表" in resp.text
    assert f'value="{fakes.koala.username}"' in resp.text
    assert fakes.koala.password not in resp.text
    assert (await api_settings(anonymous, "servers"))["koala_ip"] == ""


@pytest.mark.gen_test
async def test_koala_test_with_a_wrong_password_shows_koalas_error(admin_login, configured, fakes):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/koala-test", **koala_form(fakes, koala_password="wrong-password"))
    assert resp.status == 200
    assert "考拉登录失败：用户名或密码错误" in resp.text
    assert "wrong-password" not in resp.text
    assert (await configured.system_settings.koala_account()).password == fakes.koala.password


@pytest.mark.gen_test
async def test_koala_test_with_an_unreachable_host_says_so(admin_login, fakes):
    resp = await post(await admin_login(), "/admin/settings/koala-test", **koala_form(fakes, koala_ip="127.0.0.1:9"))
    assert resp.status == 200
    assert "考拉系统暂时无法访问" in resp.text


@pytest.mark.gen_test
async def test_koala_test_checks_the_address_first(admin_login, fakes):
    resp = await post(await admin_login(), "/admin/settings/koala-test", **koala_form(fakes, koala_ip=""))
    assert resp.status == 400
    assert "考拉主机地址不能为空" in resp.text
    assert "连接成功" not in resp.text


# --- message templates ------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_templates_save_with_a_wechat_field_mapping(admin_login, anonymous):
    browser = await admin_login()
    mapping = '{"approval_pass_to_visitor": {"thing1": "visitor_name"}}'
    resp = await post(browser, "/admin/settings/templates", **TEMPLATES, verify_code_sms_id="SMS_9",
                      wechat_fields=mapping)
    assert resp.status == 302
    assert resp.location == "/admin/settings?done=templates_saved"
    saved = await api_settings(anonymous, "templates")
    assert saved == {**TEMPLATES, "verify_code_sms_id": "SMS_9", "reminder_hour": 8,
                     "wechat_fields": {"approval_pass_to_visitor": {"thing1": "visitor_name"}}}
    page = await browser.fetch(resp.location)
    assert "消息模板设置已保存" in page.text
    assert "&#34;thing1&#34;: &#34;visitor_name&#34;" in page.text
    cleared = await post(browser, "/admin/settings/templates", **TEMPLATES, verify_code_sms_id="", wechat_fields="")
    assert cleared.status == 302
    assert (await api_settings(anonymous, "templates"))["wechat_fields"] == {}


@pytest.mark.parametrize("mapping,message", [
    ("{thing1: visitor_name}", "微信模板字段映射不是合法的 JSON"),
    ('["visitor_name"]', "微信模板字段映射应为对象"),
    ('{"signin_to_visitor": {"thing1": "salary"}}', "salary 无效"),
])
@pytest.mark.gen_test
async def test_a_bad_field_mapping_is_shown_again_with_the_error(admin_login, anonymous, mapping, message):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/templates", **TEMPLATES, verify_code_sms_id="", wechat_fields=mapping)
    assert resp.status == 400
    assert message in resp.text
    assert 'name="approval_pass_to_visitor_sms_id" value="TPL_3"' in resp.text
    assert (await api_settings(anonymous, "templates"))["approval_pass_to_visitor_sms_id"] == ""


@pytest.mark.gen_test
async def test_a_too_long_template_id_is_shown_next_to_its_field(admin_login):
    browser = await admin_login()
    resp = await post(browser, "/admin/settings/templates", **{**TEMPLATES, "signin_to_visitor_sms_id": "x" * 65},
                      verify_code_sms_id="", wechat_fields="")
    assert resp.status == 400
    assert "模板 ID长度不能超过 64 个字符" in resp.text
    assert 'is-invalid" name="signin_to_visitor_sms_id"' in resp.text


# --- API keys ---------------------------------------------------------------------------------------

def plain_key(page) -> str:
    match = re.search(r'id="plain-key">(vk_[\w-]+)<', page.text)
    assert match, page
    return match.group(1)


@pytest.mark.gen_test
async def test_a_new_key_is_shown_once_works_and_stops_when_revoked(admin_login, anonymous):
    browser = await admin_login()
    created = await post(browser, "/admin/keys", name="一号门闸机", role="gate")
    assert created.status == 200
    assert "请立即复制保存，此密钥只显示这一次" in created.text
    assert created.headers["Cache-Control"] == "no-store"
    key = plain_key(created)
    scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "not-a-pass"}, key=key)
    assert scan.status == 200
    assert scan.json()["code"] == -201
    listing = await browser.fetch("/admin/keys")
    assert key not in listing.text
    assert "一号门闸机" in listing.text
    assert f"<code>{key[:7]}…</code>" in listing.text
    key_id = re.search(r'action="/admin/keys/([^/]+)/revoke"', listing.text).group(1)
    revoked = await post(browser, f"/admin/keys/{key_id}/revoke")
    assert revoked.status == 302
    assert revoked.location == "/admin/keys?done=key_revoked"
    again = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "not-a-pass"}, key=key)
    assert again.status == 401
    after = await browser.fetch(revoked.location)
    assert "API 密钥已停用" in after.text
    assert "已停用" in after.text
    assert f'/admin/keys/{key_id}/revoke' not in after.text


@pytest.mark.gen_test
async def test_a_kiosk_key_is_refused_by_an_admin_endpoint(admin_login, anonymous):
    key = plain_key(await post(await admin_login(), "/admin/keys", name="前台签到机", role="kiosk"))
    assert (await anonymous.fetch("/v1/config/servers", key=key)).status == 403


@pytest.mark.parametrize("name,role,message", [
    ("", "gate", "请填写名称"),
    ("x" * 65, "gate", "名称不能超过 64 个字符"),
    ("闸机", "root", "请选择用途"),
])
@pytest.mark.gen_test
async def test_a_bad_key_form_is_shown_again(admin_login, ctx, name, role, message):
    resp = await post(await admin_login(), "/admin/keys", name=name, role=role)
    assert resp.status == 400
    assert message in resp.text
    assert len(await ctx.api_keys.list()) == 3


@pytest.mark.gen_test
async def test_revoking_an_unknown_key_is_a_404_page(admin_login):
    resp = await post(await admin_login(), "/admin/keys/no-such-key/revoke")
    assert resp.status == 404
    assert "该 API 密钥不存在" in resp.text


# --- admin users ------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_an_added_admin_can_log_in(admin_login, ctx):
    browser = await admin_login()
    resp = await post(browser, "/admin/users", username="frontdesk", password="front-desk-pw", password2="front-desk-pw")
    assert resp.status == 302
    assert resp.location == "/admin/users?done=user_created"
    page = await browser.fetch(resp.location)
    assert "管理员已添加" in page.text
    assert "frontdesk" in page.text
    assert "password_hash" not in page.text and "scrypt" not in page.text
    await admin_login("frontdesk", "front-desk-pw")


@pytest.mark.parametrize("username,password,password2,status,message", [
    (ADMIN_USER, "long-enough-pw", "long-enough-pw", 409, "该管理员用户名已存在"),
    ("ab", "long-enough-pw", "long-enough-pw", 400, "用户名应为 3–32 个字符"),
    ("有空格 的名字", "long-enough-pw", "long-enough-pw", 400, "用户名应为 3–32 个字符"),
    ("newadmin", "short", "short", 400, "密码至少 8 个字符"),
    ("newadmin", "long-enough-pw", "long-enough-pX", 400, "两次输入的密码不一致"),
])
@pytest.mark.gen_test
async def test_a_bad_new_admin_is_shown_again(admin_login, ctx, username, password, password2, status, message):
    resp = await post(await admin_login(), "/admin/users", username=username, password=password,
                      password2=password2)
    assert resp.status == status
    assert message in resp.text
    assert f'value="{username}"' in resp.text
    assert await ctx.storage.db.admins.count_documents({}) == 1


@pytest.mark.gen_test
async def test_a_changed_password_is_the_one_that_logs_in(admin_login, client):
    browser = await admin_login()
    resp = await post(browser, "/admin/users/password", username=ADMIN_USER, password="new-password-1",
                      password2="new-password-1")
    assert resp.status == 302
    assert resp.location == "/admin/users?done=password_changed"
    assert "密码已修改" in (await browser.fetch(resp.location)).text
    await admin_login(ADMIN_USER, "new-password-1")
    other = client()
    await other.fetch("/admin/login")
    refused = await post(other, "/admin/login", username=ADMIN_USER, password=ADMIN_PASSWORD)
    assert refused.status == 401


@pytest.mark.gen_test
async def test_a_changed_password_logs_out_the_old_passwords_sessions(admin_login, ctx):
    await ctx.admins.create("frontdesk", "desk-password-1")
    mine, elsewhere = await admin_login(), await admin_login()
    desk = await admin_login("frontdesk", "desk-password-1")
    resp = await post(mine, "/admin/users/password", username=ADMIN_USER, password="new-password-1",
                      password2="new-password-1")
    assert resp.status == 302
    assert (await mine.fetch("/admin/")).status == 200  # who changed it stays logged in
    assert (await elsewhere.fetch("/admin/")).location == "/admin/login?next=/admin/"
    assert (await desk.fetch("/admin/")).status == 200  # another admin is not touched
    await post(mine, "/admin/users/password", username="frontdesk", password="desk-password-2",
               password2="desk-password-2")
    assert (await desk.fetch("/admin/")).status == 302
    assert (await mine.fetch("/admin/")).status == 200


@pytest.mark.parametrize("password,password2,message", [
    ("short", "short", "密码至少 8 个字符"),
    ("new-password-1", "new-password-2", "两次输入的密码不一致"),
])
@pytest.mark.gen_test
async def test_a_bad_new_password_is_shown_in_that_users_form(admin_login, password, password2, message):
    browser = await admin_login()
    resp = await post(browser, "/admin/users/password", username=ADMIN_USER, password=password, password2=password2)
    assert resp.status == 400
    assert message in resp.text
    assert "<details open>" in resp.text
    await admin_login()  # unchanged


@pytest.mark.gen_test
async def test_changing_an_unknown_users_password_is_a_404_page(admin_login):
    resp = await post(await admin_login(), "/admin/users/password", username="nobody", password="new-password-1",
                      password2="new-password-1")
    assert resp.status == 404
