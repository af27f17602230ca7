"""The client's address and protocol: forwarded headers are believed only from TRUSTED_PROXIES."""
import logging

import pytest
from tornado.httputil import HTTPHeaders

from handlers.proxies import TrustedProxies
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, GATE_KEY
from tests.support import set_cookie_headers
from wxapp.config import Config, ConfigError


def trusting(*networks):
    """Serve the test's app trusting forwarded headers from these networks only."""
    return pytest.mark.config(trusted_proxies=networks)


async def try_login(browser, password, username=ADMIN_USER, headers=None):
    await browser.fetch("/admin/login")
    return await browser.fetch("/admin/login", "POST", headers=headers, form={
        "username": username, "password": password, "_xsrf": browser.cookie("_xsrf")})


@trusting()
@pytest.mark.gen_test(timeout=30)
async def test_a_client_cannot_pick_its_address_by_sending_forwarded_headers(client):
    browser = client()
    statuses = []
    for n in range(21):  # a new name and a new "address" each time: only the real address repeats
        forged = {"X-Real-Ip": f"203.0.113.{n}", "X-Forwarded-For": f"198.51.100.{n}"}
        statuses.append((await try_login(browser, "wrong", f"guess{n}", forged)).status)
    assert statuses == [401] * 20 + [429]


@pytest.mark.gen_test
async def test_behind_a_trusted_proxy_each_client_is_counted_at_its_own_address(client):
    browser = client()
    for _ in range(5):
        assert (await try_login(browser, "wrong", headers={"X-Real-Ip": "203.0.113.7"})).status == 401
    assert (await try_login(browser, ADMIN_PASSWORD, headers={"X-Real-Ip": "203.0.113.7"})).status == 429
    assert (await try_login(browser, ADMIN_PASSWORD, headers={"X-Real-Ip": "203.0.113.8"})).status == 302


@pytest.mark.parametrize("secure", [pytest.param(True, marks=trusting("127.0.0.1")),
                                    pytest.param(False, marks=trusting())])
@pytest.mark.gen_test
async def test_https_is_believed_only_from_a_trusted_proxy(client, secure):
    # The session cookie is marked Secure only when the request really came in over HTTPS.
    browser = client()
    resp = await try_login(browser, ADMIN_PASSWORD, headers={"X-Forwarded-Proto": "https"})
    assert resp.status == 302
    assert ("; Secure" in set_cookie_headers(resp)["admin_session"]) is secure


@pytest.mark.parametrize("logged", [pytest.param("10.1.2.3", marks=trusting("127.0.0.0/8")),
                                    pytest.param("127.0.0.1", marks=trusting())])
@pytest.mark.gen_test
async def test_the_gate_log_names_the_address_the_proxies_vouch_for(gate_path, anonymous, configured, caplog, logged):
    with caplog.at_level(logging.DEBUG, logger="tornado.access"):
        resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "no-such-token-0000"},
                                     key=GATE_KEY, headers={"X-Real-Ip": "10.1.2.3"})
    assert resp.json()["code"] == -201
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any(line.startswith(f"200 POST /v1/visit/qrcode ({logged})") for line in lines), lines


def test_the_client_is_the_last_address_before_our_own_proxies():
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    chain = HTTPHeaders({"X-Forwarded-For": "192.0.2.66, 203.0.113.9, 10.0.0.7"})
    assert proxies.client(chain, "127.0.0.1") == "203.0.113.9"  # 192.0.2.66 was written by the client
    assert proxies.client(HTTPHeaders({"X-Forwarded-For": "junk, 10.0.0.7"}), "127.0.0.1") == "127.0.0.1"
    assert proxies.client(HTTPHeaders({"X-Real-Ip": "203.0.113.5"}), "127.0.0.1") == "203.0.113.5"
    assert "::ffff:10.1.1.1" in proxies and "11.0.0.1" not in proxies and "nonsense" not in proxies


def test_trusted_proxies_come_from_the_environment_and_default_to_loopback():
    assert Config.from_env({}).trusted_proxies == Config().trusted_proxies == ("127.0.0.0/8", "::1/128")
    assert Config.from_env({"TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}).trusted_proxies == ("10.0.0.5/32", "10.1.0.0/16")
    assert Config.from_env({"TRUSTED_PROXIES": "none"}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Config.from_env({"TRUSTED_PROXIES": "10.0.0.5, proxy.local"})
