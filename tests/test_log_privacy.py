"""What the logs may keep: phones masked; OAuth codes and states, keys, tokens and QR passes left out."""
import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from handlers.base import BaseHandler


@pytest.mark.gen_test
async def test_the_access_log_masks_phones_and_drops_codes_states_and_keys(journey, session_of, client, fakes, ctx,
                                                                            caplog):
    rid = await journey(sign_in=True)
    token = (await ctx.visits.get(rid))["token"]
    visitor = await session_of("o-v1")
    fakes.wechat.add_user("o-abc")
    fakes.wechat.login_as("o-abc")
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001&name=13700000011")
        await visitor.fetch("/v1/auth/records?phone=138-0000-0002")
        browser = client()
        start = await browser.fetch("/wechat/oauth?next=/h5/")
        callback_url = (await browser.fetch(start.location)).location
        await browser.fetch(callback_url)
        await browser.fetch("/v1/config/servers?key=vk_leaked_key_1234&access_token=tok_5678")
        await browser.fetch(f"/qrcode/{token}.png")
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == "tornado.access")
    query = parse_qs(urlsplit(callback_url).query)
    for secret in ("13900000001", "13700000011", "138-0000-0002", "13800000002", query["code"][0],
                   query["state"][0], "vk_leaked_key_1234", "tok_5678", token):
        assert secret not in log, (secret, log)
    assert "proposer=139****0001" in log and "name=137****0011" in log and "phone=138****0002" in log
    assert "/wechat/oauth/callback?code=*&state=*" in log
    assert "/qrcode/*.png" in log


@pytest.mark.gen_test
async def test_an_unexpected_error_is_logged_without_the_requests_cookies_or_key(app, anonymous, caplog):
    class Broken(BaseHandler):
        def get(self):
            raise RuntimeError("something unexpected")

    app.add_handlers(r".*", [(r"/broken", Broken)])
    with caplog.at_level(logging.INFO):
        resp = await anonymous.fetch("/broken?phone=13900000001&code=oauth-code-77",
                                     headers={"Authorization": "Bearer vk_secret_key_42", "Cookie": "wx_session=sid-99"})
    assert resp.status == 500
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Uncaught exception GET /broken?phone=139****0001&code=*" in logged and "something unexpected" in logged
    for secret in ("vk_secret_key_42", "sid-99", "13900000001", "oauth-code-77"):
        assert secret not in logged, (secret, logged)


@pytest.mark.gen_test
async def test_a_refusal_naming_a_phone_is_logged_with_the_phone_masked(bind_visitor, caplog):
    visitor = await bind_visitor("o-v1", "13900000001")
    with caplog.at_level(logging.INFO):
        again = await visitor.fetch("/v1/visitor/binding", "POST", json={
            "weixinUserId": "o-v1", "phone": "13900000002", "code": "000000"})
    assert again.status == 409 and "13900000001" in again.json()["err_msg"]  # the user sees their own phone
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "139****0001" in logged and "13900000001" not in logged, logged
