"""What every answer says to the browser (CSP, framing, sniffing, referrer, caching, HSTS, no banner),
and cookies over https."""
import re

import pytest
import tornado.httpserver
import tornado.testing

from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, ADMIN_USER, GATE_KEY
from tests.support import Browser, set_cookie_headers


def assert_security_headers(resp) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ") if d}
    assert directives.get("script-src") == ["'self'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert resp.headers.get("X-Frame-Options") == "DENY"
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("Referrer-Policy") == "same-origin"
    assert "Server" not in resp.headers, resp.headers.get("Server")


@pytest.mark.gen_test
async def test_every_kind_of_answer_carries_the_security_headers_and_no_banner(anonymous, admin_login):
    admin = await admin_login()
    answers = {
        "H5 page without a session (redirect)": await anonymous.fetch("/h5/me"),
        "login page": await anonymous.fetch("/admin/login"),
        "admin page": await admin.fetch("/admin/"),
        "missing page": await anonymous.fetch("/no/such/page"),
        "API error": await anonymous.fetch("/v1/config/servers"),
        "API answer": await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY),
        "static file": await anonymous.fetch("/h5/static/app.js"),
        "gate scan": await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x" * 32},
                                                       key=GATE_KEY),
        "WeChat login start": await anonymous.fetch("/wechat/oauth?next=/h5/"),
        "image": await anonymous.fetch("/qrcode/" + "a" * 32 + ".png"),
    }
    for name, resp in answers.items():
        assert resp.status < 500, (name, resp)
        assert_security_headers(resp)


@pytest.mark.gen_test
async def test_pages_and_answers_with_personal_data_are_never_stored(journey, session_of, admin_login, anonymous,
                                                                     ctx):
    rid = await journey()
    visitor, admin = await session_of("o-v1"), await admin_login()
    token = (await ctx.visits.get(rid))["token"]
    answers = {
        "/h5/records/{id}": await visitor.fetch(f"/h5/records/{rid}"),
        "/h5/me": await visitor.fetch("/h5/me"),
        "/h5/records": await visitor.fetch("/h5/records"),
        "/admin/records/{id}": await admin.fetch(f"/admin/records/{rid}"),
        "QR pass image": await anonymous.fetch(f"/qrcode/{token}.png"),
        "records API": await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001"),
    }
    for name, resp in answers.items():
        assert resp.status == 200, (name, resp)
        assert resp.headers.get("Cache-Control") == "no-store", name
    assert "13900000001" in answers["/admin/records/{id}"].text  # what makes it personal


INLINE_CODE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.I)


@pytest.mark.gen_test
async def test_pages_hold_no_inline_scripts_handlers_or_styles(journey, session_of, bind_employee, admin_login,
                                                               anonymous):
    rid = await journey()
    visitor, employee, admin = await session_of("o-v1"), await session_of("o-e1"), await admin_login()
    pages = [(visitor, p) for p in ("/h5/", "/h5/apply", "/h5/records", f"/h5/records/{rid}", "/h5/me")]
    pages += [(employee, p) for p in ("/h5/approvals", "/h5/invite")]
    pages += [(await session_of("o-new"), "/h5/bind/visitor"), (anonymous, "/admin/login"), (anonymous, "/nope")]
    pages += [(admin, p) for p in ("/admin/", "/admin/records", f"/admin/records/{rid}",
                                   f"/admin/records/{rid}/delete", "/admin/keys", "/admin/settings", "/admin/users",
                                   "/admin/passes", "/admin/notifications", "/admin/koala",
                                   f"/admin/records/{rid}/decline", f"/admin/records/{rid}/cancel")]
    for browser, path in pages:
        resp = await browser.fetch(path)
        assert resp.status in (200, 404), (path, resp)
        assert "text/html" in resp.headers["Content-Type"], path
        assert not INLINE_CODE.findall(resp.text), (path, INLINE_CODE.findall(resp.text))


@pytest.fixture
def proxied(app, http_client):
    """The app served as server.py serves it (forwarded headers honoured), reached through a proxy that
    says the browser came over https; returns a factory of Browsers."""
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app, xheaders=True)
    server.add_socket(sock)

    def browser(proto: str = "https") -> Browser:
        return Browser(http_client, f"http://127.0.0.1:{port}", headers={"X-Forwarded-Proto": proto})
    yield browser
    server.stop()


@pytest.mark.gen_test
async def test_over_https_answers_ask_for_hsts_and_every_cookie_is_secure(proxied, fakes):
    browser = proxied("https")
    login_page = await browser.fetch("/admin/login")
    assert "Secure" in set_cookie_headers(login_page)["_xsrf"]
    assert login_page.headers["Strict-Transport-Security"].startswith("max-age=")
    login = await browser.fetch("/admin/login", "POST", form={
        "username": ADMIN_USER, "password": ADMIN_PASSWORD, "_xsrf": browser.cookie("_xsrf")})
    assert login.status == 302 and "Secure" in set_cookie_headers(login)["admin_session"]
    fakes.wechat.add_user("o-abc")
    fakes.wechat.login_as("o-abc")
    start = await browser.fetch("/wechat/oauth?next=/h5/")
    assert "Secure" in set_cookie_headers(start)["wx_login"]
    callback_url = (await browser.fetch(start.location)).location  # https://, as the proxy would take it
    callback = await browser.fetch(callback_url.replace("https://", "http://", 1))
    assert "Secure" in set_cookie_headers(callback)["wx_session"]
    gate = await browser.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x" * 32}, key=GATE_KEY)
    assert gate.json()["code"] == -201 and "Strict-Transport-Security" in gate.headers


@pytest.mark.gen_test
async def test_over_plain_http_there_is_no_hsts_and_cookies_are_not_secure(proxied):
    page = await proxied("http").fetch("/admin/login")
    assert "Strict-Transport-Security" not in page.headers
    assert "Secure" not in set_cookie_headers(page)["_xsrf"]
