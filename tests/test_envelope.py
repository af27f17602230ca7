"""The /v1 envelope (CONTRACT §2): one shape for every success and every error."""
import dataclasses
import logging

import pytest
import tornado.httpserver
import tornado.testing

from handlers import make_app
from handlers.base import APIHandler
from tests.conftest import ADMIN_KEY
from wxapp.context import build_context
from wxapp.embedded import RedisProcess


@pytest.mark.gen_test
async def test_success_is_code_0_with_empty_err_msg_and_json_content_type(anonymous):
    resp = await anonymous.fetch("/v1/config/templates", key=ADMIN_KEY)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    body = resp.json()
    assert body["code"] == 0 and body["err_msg"] == "" and "data" in body


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/subject/purpose", "/v1", "/v1/config/servers/extra"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.gen_test
async def test_unknown_v1_paths_answer_404_in_the_envelope(anonymous, path, method):
    resp = await anonymous.fetch(path, method)
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert resp.json() == {"code": 404, "err_msg": "接口不存在"}


@pytest.mark.gen_test
async def test_unknown_page_outside_v1_is_a_chinese_html_page(anonymous):
    resp = await anonymous.fetch("/no/such/page")
    assert resp.status == 404
    assert "text/html" in resp.headers["Content-Type"]
    assert "页面不存在" in resp.text


@pytest.mark.gen_test
async def test_wrong_method_is_405_in_the_envelope(anonymous):
    resp = await anonymous.fetch("/v1/config/servers", "POST", json={}, key=ADMIN_KEY)
    assert resp.status == 405
    assert resp.json() == {"code": 405, "err_msg": "不支持该请求方法"}
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "PUT"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
@pytest.mark.gen_test
async def test_malformed_json_is_400(anonymous, body):
    resp = await anonymous.fetch("/v1/config/servers", "PUT", body=body, key=ADMIN_KEY,
                                 headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.json()["code"] == 400
    assert "JSON" in resp.json()["err_msg"]


class Boom(APIHandler):
    async def get(self):
        raise RuntimeError("secret internal detail /etc/passwd")


@pytest.mark.gen_test
async def test_unexpected_exception_is_500_with_a_generic_message_and_a_logged_traceback(app, anonymous, caplog):
    app.add_handlers(r".*", [(r"/boom", Boom)])
    with caplog.at_level(logging.ERROR):
        resp = await anonymous.fetch("/boom")
    assert resp.status == 500
    assert resp.json() == {"code": 500, "err_msg": "服务器内部错误，请稍后再试"}
    assert "secret internal detail" not in resp.text
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert "Traceback" in caplog.text


@pytest.fixture
def redis_that_stops(tmp_path):
    """A redis-server of this test's own, which the test stops halfway."""
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


@pytest.mark.gen_test
async def test_redis_down_is_503_not_500(config, client, redis_that_stops):
    context = await build_context(dataclasses.replace(config, redis_url=redis_that_stops.url))
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(make_app(context.services))
    server.add_socket(sock)
    try:
        browser = client()
        browser.base_url = f"http://127.0.0.1:{port}"
        assert (await browser.fetch("/healthz")).json()["data"] == {"mongo": "ok", "redis": "ok"}
        redis_that_stops.stop()
        health = await browser.fetch("/healthz")
        assert health.status == 503
        assert health.json() == {"code": 503, "err_msg": "数据服务暂时不可用",
                                 "data": {"mongo": "ok", "redis": "unavailable"}}
        api = await browser.fetch("/v1/config/servers", key=ADMIN_KEY)
        assert api.status == 503
        assert api.json() == {"code": 503, "err_msg": "数据服务暂时不可用，请稍后再试"}
        scan = await browser.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "some-token-0123456789"},
                                   key=ADMIN_KEY)
        assert scan.status == 503
        assert scan.json() == {"code": 503, "err_msg": "数据服务暂时不可用，请稍后再试"}
    finally:
        server.stop()
        await context.close()
