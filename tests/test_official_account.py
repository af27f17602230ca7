"""The Official Account: the /wechat message endpoint (plain and safe mode), the menu, and the
admin's view of the notifications."""
import hashlib
import json
import logging
import time
import uuid

import pytest
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto

from tests.conftest import ADMIN_KEY
from wxapp import menu as menu_command
from wxapp.official_account import menu

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TOKEN = "test-token"


def signed(nonce=None, timestamp=None, token=TOKEN) -> str:
    """The query WeChat signs a call with: a fresh nonce each time (a nonce is accepted once)."""
    nonce = nonce or uuid.uuid4().hex[:10]
    timestamp = str(timestamp or int(time.time()))
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    return f"signature={signature}&timestamp={timestamp}&nonce={nonce}"


def incoming(body: str, kind: str = "text", **fields) -> bytes:
    extra = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    content = f"<Content><![CDATA[{body}]]></Content>" if kind == "text" else ""
    return (f"<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[o-follower]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>{content}{extra}"
            f"<MsgId>1</MsgId></xml>").encode()


async def post(anonymous, xml: bytes, query: str):
    return await anonymous.fetch(f"/wechat?{query}", "POST", body=xml, headers={"Content-Type": "text/xml"})


@pytest.mark.gen_test
async def test_get_echoes_echostr_only_with_a_valid_signature(anonymous):
    ok = await anonymous.fetch(f"/wechat?{signed()}&echostr=hello123")
    assert (ok.status, ok.text) == (200, "hello123")
    forged = await anonymous.fetch(f"/wechat?{signed(token='wrong')}&echostr=hello123")
    assert forged.status == 403 and "hello123" not in forged.text


@pytest.mark.gen_test
async def test_echostr_comes_back_as_plain_text_not_markup(anonymous):
    resp = await anonymous.fetch(f"/wechat?{signed()}&echostr=%3Cscript%3Ealert(1)%3C/script%3E")
    assert resp.status == 200 and resp.text == "<script>alert(1)</script>"
    assert resp.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("when", [lambda now: now - 301, lambda now: now + 301, lambda now: 1_700_000_000],
                         ids=["past", "future", "2023"])
@pytest.mark.gen_test
async def test_a_signature_more_than_five_minutes_off_is_refused(anonymous, when):
    stale = signed(timestamp=when(int(time.time())))
    assert (await anonymous.fetch(f"/wechat?{stale}&echostr=hello")).status == 403
    assert (await post(anonymous, incoming("预约"), stale)).status == 403
    assert (await anonymous.fetch(f"/wechat?{signed(timestamp=int(time.time()) - 290)}&echostr=ok")).text == "ok"


@pytest.mark.gen_test
async def test_a_signed_query_is_accepted_once_whatever_the_body(anonymous, configured):
    query = signed()
    assert (await post(anonymous, incoming("预约"), query)).status == 200
    replay = await post(anonymous, incoming("查看记录"), query)
    assert replay.status == 403
    assert (await anonymous.fetch(f"/wechat?{query}&echostr=hello")).status == 403


@pytest.mark.gen_test
async def test_the_access_log_keeps_no_signature_timestamp_nonce_or_echo(anonymous, caplog):
    query = signed(nonce="secretnonce42", timestamp=int(time.time()))
    signature = query.split("&")[0].split("=")[1]
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        await anonymous.fetch(f"/wechat?{query}&echostr=echo-9f8e7d")
        await anonymous.fetch(f"/wechat?{query}&echostr=echo-9f8e7d")  # refused as a replay: logged too
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(lines) == 2 and lines[0].startswith("200 GET /wechat?") and lines[1].startswith("403 GET /wechat?")
    for secret in (signature, "secretnonce42", query.split("timestamp=")[1].split("&")[0], "echo-9f8e7d"):
        assert not any(secret in line for line in lines), (secret, lines)


@pytest.mark.gen_test
async def test_a_follower_is_welcomed_with_links_through_the_wechat_login(anonymous, configured):
    resp = await post(anonymous, incoming("", kind="event", Event="subscribe"), signed())
    reply = parse_message(resp.body)
    assert reply.target == "o-follower" and reply.type == "text"
    assert "欢迎关注" in reply.content
    assert "https://visit.example.com/wechat/oauth?next=/h5/apply" in reply.content
    assert "https://visit.example.com/wechat/oauth?next=/h5/records" in reply.content


@pytest.mark.parametrize("text,page", [("我想预约", "/h5/apply"), ("查看记录", "/h5/records"), ("绑定", "/h5/")])
@pytest.mark.gen_test
async def test_keywords_answer_with_the_matching_page(anonymous, configured, text, page):
    reply = parse_message((await post(anonymous, incoming(text), signed())).body)
    assert f"next={page}\"" in reply.content


@pytest.mark.gen_test
async def test_menu_clicks_and_anything_else_get_an_answer(anonymous, configured):
    click = parse_message((await post(anonymous, incoming("", kind="event", Event="CLICK", EventKey="RECORDS"),
                                      signed())).body)
    assert "/h5/records" in click.content
    other = parse_message((await post(anonymous, incoming("你好"), signed())).body)
    assert "您可以回复" in other.content


@pytest.mark.parametrize("body", [b"<xml><broken", b"not xml at all", b""])
@pytest.mark.gen_test
async def test_malformed_xml_is_refused_without_a_server_error(anonymous, body):
    resp = await post(anonymous, body, signed())
    assert resp.status == 400


@pytest.mark.gen_test
async def test_a_forged_post_is_403(anonymous):
    resp = await post(anonymous, incoming("预约"), signed(token="wrong"))
    assert resp.status == 403


@pytest.mark.config(wechat_encoding_aes_key=AES_KEY)
@pytest.mark.gen_test
async def test_safe_mode_decrypts_and_encrypts(anonymous, configured, fakes):
    crypto = WeChatCrypto(TOKEN, AES_KEY, fakes.wechat.app_id)
    nonce, timestamp = "n0nce", str(int(time.time()))
    encrypted = crypto.encrypt_message(incoming("预约").decode(), nonce, timestamp)
    fields = parse_message_fields(encrypted)
    query = f"{signed(nonce, timestamp)}&encrypt_type=aes&msg_signature={fields['MsgSignature']}"
    resp = await post(anonymous, encrypted.encode(), query)
    assert resp.status == 200
    reply_fields = parse_message_fields(resp.text)
    plain = crypto.decrypt_message(resp.text, reply_fields["MsgSignature"], reply_fields["TimeStamp"],
                                   reply_fields["Nonce"])
    assert "/h5/apply" in parse_message(plain).content
    tampered = await post(anonymous, encrypted.encode(), f"{signed('n1nce', timestamp)}&msg_signature=bad")
    assert tampered.status == 403


def parse_message_fields(xml: str) -> dict:
    import xmltodict
    return xmltodict.parse(xml)["xml"]


def test_the_menu_opens_the_h5_pages_through_the_login(capsys):
    body = menu("https://visit.example.com")
    urls = json.dumps(body, ensure_ascii=False)
    for page in ("/h5/apply", "/h5/records", "/h5/approvals"):
        assert f"https://visit.example.com/wechat/oauth?next={page}" in urls
    assert menu_command.main(["--cloud-url", "https://visit.example.com", "--print"]) == 0
    assert json.loads(capsys.readouterr().out) == body


@pytest.mark.gen_test
async def test_the_menu_is_created_through_wechat(ctx, fakes):
    await ctx.wechat.create_menu(menu("https://visit.example.com"))
    assert fakes.wechat.menu == menu("https://visit.example.com")


# --- the admin's view of the outbox -----------------------------------------------------------

@pytest.mark.gen_test
async def test_admin_lists_notifications_and_retries_a_failed_one(journey, ctx, fakes, anonymous):
    await journey(sign_in=False)
    fakes.wechat.fail_template(43004, "require subscribe", times=1, openid="o-v1")
    await ctx.delivery.run_once()
    failed = (await anonymous.fetch("/v1/notifications?status=failed", key=ADMIN_KEY)).json()
    assert failed["page"]["count"] == 1
    entry = failed["data"][0]
    assert (entry["event"], entry["channel"], entry["to"]) == ("approval_pass_to_visitor", "wechat", "o-v1")
    assert "43004" in entry["last_error"]
    everything = (await anonymous.fetch("/v1/notifications?size=10", key=ADMIN_KEY)).json()
    assert everything["page"]["count"] == 4
    retried = await anonymous.fetch(f"/v1/notifications/{entry['id']}/retry", "POST", key=ADMIN_KEY)
    assert retried.json()["data"]["status"] == "pending"
    await ctx.delivery.run_once()
    assert (await ctx.storage.db.outbox.find_one({"_id": entry["id"]}))["status"] == "sent"
    again = await anonymous.fetch(f"/v1/notifications/{entry['id']}/retry", "POST", key=ADMIN_KEY)
    assert again.status == 409
    unknown = await anonymous.fetch("/v1/notifications/nothing/retry", "POST", key=ADMIN_KEY)
    assert unknown.status == 404


def test_the_menu_command_creates_the_menu_through_the_configured_wechat(monkeypatch, capsys):
    # The command runs its own event loop, so the local WeChat serves from a thread of its own.
    import asyncio
    import threading

    from tests.fakes import FakeWeChat

    ready = threading.Event()
    holder = {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        wechat = FakeWeChat()
        wechat.start()
        holder.update(wechat=wechat, loop=loop)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    wechat, loop = holder["wechat"], holder["loop"]
    try:
        for name, value in {"WECHAT_APP_ID": wechat.app_id, "WECHAT_APP_SECRET": wechat.app_secret,
                            "WECHAT_API_BASE_URL": wechat.url, "REDIS_URL": ""}.items():
            monkeypatch.setenv(name, value)
        assert menu_command.main(["--cloud-url", "https://visit.example.com"]) == 0
        assert "menu created" in capsys.readouterr().out
        assert wechat.menu == menu("https://visit.example.com")
        assert wechat.tokens_issued == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
