"""Who may call what (CONTRACT §4): WeChat OAuth sessions, API keys with roles, admin login."""
import json
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, ADMIN_USER, GATE_KEY, KIOSK_KEY
from tests.support import set_cookie_headers
from wxapp import security


# --- WeChat OAuth ---------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_oauth_start_redirects_to_wechat_authorize_with_a_one_time_state(anonymous, fakes, ctx):
    resp = await anonymous.fetch("/wechat/oauth?next=/h5/apply")
    assert resp.status == 302
    url = urlsplit(resp.location)
    assert resp.location.startswith(fakes.wechat.url + "connect/oauth2/authorize?")
    assert resp.location.endswith("#wechat_redirect")
    query = parse_qs(url.query)
    assert query["appid"] == [fakes.wechat.app_id]
    assert query["scope"] == ["snsapi_userinfo"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"][0].endswith("/wechat/oauth/callback")
    state = query["state"][0]
    assert len(state) >= 32
    assert json.loads(await ctx.redis.get(f"oauth_state:{state}"))["next"] == "/h5/apply"
    assert 0 < await ctx.redis.ttl(f"oauth_state:{state}") <= 600


@pytest.mark.gen_test
async def test_oauth_redirect_uri_uses_cloud_url_when_set(anonymous, ctx):
    await ctx.storage.db.settings.insert_one({"_id": "servers", "cloud_url": "https://visit.example.com"})
    resp = await anonymous.fetch("/wechat/oauth?next=/h5/")
    redirect_uri = parse_qs(urlsplit(resp.location).query)["redirect_uri"][0]
    assert redirect_uri == "https://visit.example.com/wechat/oauth/callback"


@pytest.mark.gen_test
async def test_wechat_login_stores_the_user_and_sets_a_signed_httponly_cookie(client, fakes, ctx):
    fakes.wechat.add_user("o-abc", nickname="李四", headimgurl="https://wx.qlogo.cn/abc.png")
    fakes.wechat.login_as("o-abc")
    browser = client()
    start = await browser.fetch("/wechat/oauth?next=/h5/records")
    code_redirect = await browser.fetch(start.location)
    callback = await browser.fetch(code_redirect.location)
    assert callback.status == 302
    assert callback.location == "/h5/records"
    cookie = set_cookie_headers(callback)["wx_session"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    user = await ctx.wechat_users.get("o-abc")
    assert user["nickname"] == "李四"
    assert user["headimgurl"] == "https://wx.qlogo.cn/abc.png"


@pytest.mark.gen_test
async def test_oauth_state_cannot_be_used_twice(client, fakes):
    fakes.wechat.add_user("o-abc")
    fakes.wechat.login_as("o-abc")
    browser = client()
    start = await browser.fetch("/wechat/oauth?next=/h5/")
    code_redirect = await browser.fetch(start.location)
    assert (await browser.fetch(code_redirect.location)).status == 302
    replay = await client().fetch(code_redirect.location)
    assert replay.status == 400
    assert "登录链接已失效" in replay.text
    assert 'href="/wechat/oauth?next=/h5/"' in replay.text  # a way back in, not a dead end
    assert "wx_session" not in set_cookie_headers(replay)


@pytest.mark.gen_test
async def test_oauth_callback_with_unknown_state_is_refused(anonymous):
    resp = await anonymous.fetch("/wechat/oauth/callback?code=abc&state=forged")
    assert resp.status == 400
    assert "text/html" in resp.headers["Content-Type"]
    assert "wx_session" not in set_cookie_headers(resp)


@pytest.mark.gen_test
async def test_oauth_user_who_declines_gets_a_clear_page(anonymous):
    start = await anonymous.fetch("/wechat/oauth?next=/h5/")
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    resp = await anonymous.fetch(f"/wechat/oauth/callback?state={state}")
    assert resp.status == 403
    assert "未同意授权" in resp.text


@pytest.mark.gen_test
async def test_oauth_fails_with_502_page_when_wechat_rejects_the_code(anonymous, fakes):
    start = await anonymous.fetch("/wechat/oauth?next=/h5/")
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    resp = await anonymous.fetch(f"/wechat/oauth/callback?state={state}&code=not-a-real-code")
    assert resp.status == 502
    assert "微信登录失败" in resp.text
    assert "40029" not in resp.text


async def _callback_link(browser, fakes, openid: str, next_url: str = "/h5/bind/visitor") -> str:
    """Start a login in `browser` as `openid` and stop before the callback: its link, code and state."""
    fakes.wechat.add_user(openid)
    fakes.wechat.login_as(openid)
    start = await browser.fetch("/wechat/oauth?next=" + next_url)
    return (await browser.fetch(start.location)).location


@pytest.mark.gen_test
async def test_a_callback_link_sent_to_a_victim_does_not_log_the_victim_in(client, fakes, configured):
    # Login CSRF: the attacker's own callback link, opened by the victim, would log the victim's browser
    # into the attacker's WeChat; the victim would then bind their phone to the attacker.
    attacker = client()
    link = await _callback_link(attacker, fakes, "o-attacker")
    victim = client()
    resp = await victim.fetch(link)
    assert resp.status == 400
    assert "wx_session" not in set_cookie_headers(resp)
    sms = await victim.fetch("/v1/sms/code", "POST", json={"phone": "13900000009"})
    assert sms.status == 401
    bind = await victim.fetch("/v1/visitor/binding", "POST", json={"weixinUserId": "o-attacker",
                                                                    "phone": "13900000009", "code": "000000"})
    assert bind.status == 401
    assert (await attacker.fetch(link)).status == 400  # the state is spent: the link is good for nothing now


@pytest.mark.gen_test
async def test_a_callback_link_is_refused_in_a_browser_that_started_its_own_login(client, fakes):
    victim = client()
    await victim.fetch("/wechat/oauth?next=/h5/")  # the victim's own login, not finished
    link = await _callback_link(client(), fakes, "o-attacker")
    resp = await victim.fetch(link)
    assert resp.status == 400
    assert "wx_session" not in set_cookie_headers(resp)


@pytest.mark.gen_test
async def test_two_logins_started_in_one_browser_can_each_finish(client, fakes):
    browser = client()
    first = await _callback_link(browser, fakes, "o-abc", "/h5/records")
    second = await _callback_link(browser, fakes, "o-abc", "/h5/me")
    assert (await browser.fetch(first)).location == "/h5/records"
    assert (await browser.fetch(second)).location == "/h5/me"


@pytest.mark.gen_test
async def test_the_login_nonce_cookie_is_short_lived_and_httponly(anonymous):
    resp = await anonymous.fetch("/wechat/oauth?next=/h5/")
    cookie = set_cookie_headers(resp)["wx_login"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Max-Age=600" in cookie and "Path=/wechat/oauth" in cookie


async def _login_chain(browser, fakes, next_param: str):
    """Run the OAuth redirects by hand; return the callback's response."""
    fakes.wechat.add_user("o-abc")
    fakes.wechat.login_as("o-abc")
    start = await browser.fetch("/wechat/oauth?next=" + quote(next_param, safe=""))
    code_redirect = await browser.fetch(start.location)
    return await browser.fetch(code_redirect.location)


@pytest.mark.parametrize("next_url", [
    "https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com", "javascript:alert(1)",
    "evil.example.com", "/\r\nSet-Cookie:x=1",
])
@pytest.mark.gen_test
async def test_oauth_never_redirects_off_site(client, fakes, next_url):
    callback = await _login_chain(client(), fakes, next_url)
    assert callback.status == 302
    assert callback.location == "/h5/"


@pytest.mark.gen_test
async def test_oauth_keeps_a_local_next_with_its_query(client, fakes):
    callback = await _login_chain(client(), fakes, "/h5/records/12?from=msg")
    assert callback.location == "/h5/records/12?from=msg"


@pytest.mark.config(wechat_app_id="", wechat_app_secret="")
@pytest.mark.gen_test
async def test_oauth_without_an_official_account_explains_itself(anonymous):
    resp = await anonymous.fetch("/wechat/oauth?next=/h5/")
    assert resp.status == 503
    assert "公众号尚未配置" in resp.text


# --- sessions and API keys on the settings endpoints --------------------------------------------

@pytest.mark.gen_test
async def test_no_key_and_no_session_is_401(anonymous):
    resp = await anonymous.fetch("/v1/config/servers")
    assert resp.status == 401
    assert resp.json()["code"] == 401
    assert resp.json()["err_msg"]


@pytest.mark.parametrize("header", ["Bearer not-a-key", "Bearer ", "Basic YWRtaW46YWRtaW4=", ADMIN_KEY])
@pytest.mark.gen_test
async def test_unknown_or_malformed_key_is_401(anonymous, header):
    resp = await anonymous.fetch("/v1/config/servers", headers={"Authorization": header})
    assert resp.status == 401
    assert resp.json()["code"] == 401


@pytest.mark.parametrize("key", [KIOSK_KEY, GATE_KEY])
@pytest.mark.gen_test
async def test_kiosk_and_gate_keys_may_not_read_settings(anonymous, key):
    resp = await anonymous.fetch("/v1/config/servers", key=key)
    assert resp.status == 403
    assert resp.json()["code"] == 403


@pytest.mark.gen_test
async def test_a_wechat_user_may_not_read_settings(wechat_login):
    browser = await wechat_login()
    resp = await browser.fetch("/v1/config/servers")
    assert resp.status == 403
    assert resp.json() == {"code": 403, "err_msg": "当前登录身份无权调用此接口"}


@pytest.mark.parametrize("cookie", ["wx_session", "admin_session"])
@pytest.mark.gen_test
async def test_forged_session_cookie_is_401(anonymous, cookie):
    anonymous.set_cookie(cookie, "2|1:0|10:1700000000|10:wx_session|8:Zm9yZ2Vk|" + "0" * 64)
    resp = await anonymous.fetch("/v1/config/servers")
    assert resp.status == 401


@pytest.mark.gen_test
async def test_a_session_signed_with_another_secret_is_401(wechat_login, admin_login, client):
    admin = await admin_login()
    stolen = admin.cookie("admin_session")
    tampered = stolen[:-4] + ("0000" if not stolen.endswith("0000") else "1111")
    browser = client()
    browser.set_cookie("admin_session", tampered)
    assert (await browser.fetch("/v1/config/servers")).status == 401
    browser.set_cookie("admin_session", stolen)
    assert (await browser.fetch("/v1/config/servers")).status == 200


@pytest.mark.gen_test
async def test_api_keys_are_stored_hashed(ctx):
    docs = await ctx.storage.db.api_keys.find({}).to_list(None)
    assert {d["role"] for d in docs} == {"admin", "kiosk", "gate"}
    assert ADMIN_KEY not in repr(docs)
    assert security.hash_api_key(ADMIN_KEY) in {d["key_hash"] for d in docs}


@pytest.mark.gen_test
async def test_a_created_key_works_and_stops_at_once_when_revoked(anonymous, ctx):
    doc, key = await ctx.api_keys.create("admin", "前台电脑")
    assert (await anonymous.fetch("/v1/config/servers", key=key)).status == 200
    assert await ctx.api_keys.revoke(doc["_id"])
    resp = await anonymous.fetch("/v1/config/servers", key=key)
    assert resp.status == 401
    assert resp.json()["err_msg"] == "API 密钥无效或已停用"


@pytest.mark.gen_test
async def test_seeding_keys_again_changes_nothing(ctx):
    await ctx.api_keys.seed(ctx.config.api_keys)
    assert await ctx.storage.db.api_keys.count_documents({}) == 3


@pytest.mark.gen_test
async def test_a_revoked_configured_key_stays_revoked_after_a_restart(ctx, anonymous):
    doc = await ctx.storage.db.api_keys.find_one({"key_hash": security.hash_api_key(GATE_KEY)})
    assert await ctx.api_keys.revoke(doc["_id"])
    await ctx.api_keys.seed(ctx.config.api_keys)  # what the next start-up does
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x"}, key=GATE_KEY)
    assert resp.status == 401


# --- admin login ------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_first_admin_is_seeded_with_a_slow_hash(ctx):
    doc = await ctx.storage.db.admins.find_one({"_id": ADMIN_USER})
    assert doc["password_hash"].startswith("scrypt$16384$")
    assert ADMIN_PASSWORD not in doc["password_hash"]
    assert await ctx.admins.verify(ADMIN_USER, ADMIN_PASSWORD)
    assert not await ctx.admins.verify(ADMIN_USER, "wrong")
    assert not await ctx.admins.verify("nobody", ADMIN_PASSWORD)


@pytest.mark.gen_test
async def test_admin_seed_does_not_overwrite_an_existing_admin(ctx):
    assert not await ctx.admins.seed("admin2", "other-password")
    assert await ctx.storage.db.admins.count_documents({}) == 1


@pytest.mark.gen_test
async def test_admin_login_page_is_chinese_and_has_an_xsrf_field(anonymous):
    resp = await anonymous.fetch("/admin/login")
    assert resp.status == 200
    assert "访客预约管理后台" in resp.text
    assert 'name="_xsrf"' in resp.text


@pytest.mark.gen_test
async def test_admin_login_sets_an_httponly_session_and_opens_the_admin_home(admin_login):
    browser = await admin_login()
    home = await browser.fetch("/admin/")
    assert home.status == 200
    assert "今日概览" in home.text and ADMIN_USER in home.text


@pytest.mark.gen_test
async def test_admin_login_with_a_wrong_password_is_refused(client):
    browser = client()
    await browser.fetch("/admin/login")
    resp = await browser.fetch("/admin/login", "POST", form={
        "username": ADMIN_USER, "password": "wrong", "_xsrf": browser.cookie("_xsrf")})
    assert resp.status == 401
    assert "用户名或密码错误" in resp.text
    assert browser.cookie("admin_session") is None


@pytest.mark.gen_test
async def test_admin_login_without_xsrf_token_is_refused(client):
    browser = client()
    resp = await browser.fetch("/admin/login", "POST", form={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert resp.status == 403
    assert browser.cookie("admin_session") is None


@pytest.mark.gen_test
async def test_admin_login_follows_a_local_next_only(client):
    for next_url, expected in [("/admin/?tab=keys", "/admin/?tab=keys"), ("https://evil.example.com", "/admin/")]:
        browser = client()
        await browser.fetch("/admin/login")
        resp = await browser.fetch("/admin/login", "POST", form={
            "username": ADMIN_USER, "password": ADMIN_PASSWORD, "next": next_url, "_xsrf": browser.cookie("_xsrf")})
        assert resp.location == expected


@pytest.mark.gen_test
async def test_admin_pages_send_a_visitor_without_session_to_login(anonymous):
    resp = await anonymous.fetch("/admin/")
    assert resp.status == 302
    assert resp.location == "/admin/login?next=/admin/"


@pytest.mark.gen_test
async def test_admin_logout_ends_the_session_on_the_server(admin_login, client):
    browser = await admin_login()
    sid_cookie = browser.cookie("admin_session")
    resp = await browser.fetch("/admin/logout", "POST", form={"_xsrf": browser.cookie("_xsrf")})
    assert resp.status == 302
    replay = client()
    replay.set_cookie("admin_session", sid_cookie)
    assert (await replay.fetch("/v1/config/servers")).status == 401


@pytest.mark.gen_test
async def test_admin_session_expires_in_redis(admin_login, ctx):
    await admin_login()
    keys = [k async for k in ctx.redis.scan_iter("session:admin:*")]
    assert len(keys) == 1
    assert 0 < await ctx.redis.ttl(keys[0]) <= ctx.config.admin_session_ttl


@pytest.mark.gen_test
async def test_a_forged_admin_cookie_on_a_wechat_endpoint_is_401(anonymous):
    anonymous.set_cookie("admin_session", "garbage")
    resp = await anonymous.fetch("/v1/sms/code", "POST", json={"phone": "13900000001"})
    assert resp.status == 401


@pytest.mark.gen_test
async def test_an_admin_session_on_a_wechat_endpoint_is_403(admin_login):
    browser = await admin_login()
    resp = await browser.fetch("/v1/sms/code", "POST", json={"phone": "13900000001"})
    assert resp.status == 403



async def try_login(browser, password, username=ADMIN_USER):
    await browser.fetch("/admin/login")
    return await browser.fetch("/admin/login", "POST", form={
        "username": username, "password": password, "_xsrf": browser.cookie("_xsrf")})


@pytest.mark.gen_test
async def test_five_wrong_passwords_lock_the_name_for_a_while(client, ctx):
    browser = client()
    for _ in range(5):
        assert (await try_login(browser, "wrong")).status == 401
    locked = await try_login(browser, ADMIN_PASSWORD)
    assert locked.status == 429
    assert "15 分钟" in locked.text
    assert browser.cookie("admin_session") is None
    await ctx.redis.delete(f"loginfail:pair:{ADMIN_USER}:127.0.0.1")  # the window passed
    assert (await try_login(browser, ADMIN_PASSWORD)).status == 302


@pytest.mark.gen_test
async def test_a_right_password_clears_earlier_mistakes(client):
    browser = client()
    for _ in range(4):
        await try_login(browser, "wrong")
    assert (await try_login(browser, ADMIN_PASSWORD)).status == 302
    for _ in range(4):
        assert (await try_login(browser, "wrong")).status == 401


@pytest.mark.gen_test
async def test_an_owners_expired_sessions_are_forgotten_at_the_next_login(ctx):
    old = await ctx.admin_sessions.create({"username": "a"}, owner="a")
    await ctx.redis.delete(f"session:admin:{old}")  # as if it expired
    new = await ctx.admin_sessions.create({"username": "a"}, owner="a")
    assert await ctx.redis.smembers("sessions_of:admin:a") == {new}
    assert await ctx.admin_sessions.end_all("a") == 1
    assert await ctx.admin_sessions.get(new) is None
