"""Fixtures: one real SecantusDB and one real redis-server per test session, local fakes of
WeChat, Koala and Aliyun SMS per test, and the app built by `make_app` as server.py builds it."""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from types import SimpleNamespace

import pytest
from tornado.web import create_signed_value

from handlers import gatepath, make_app
from handlers.proxies import ProxiedHTTPServer
from tests.fakes import FakeKoala, FakeSms, FakeWeChat
from tests.processes import Server
from tests.support import Browser, Clock
from wxapp.config import Config
from wxapp.context import build_context
from wxapp.embedded import MongoProcess, RedisProcess
from wxapp.events import TEMPLATE_ID_FIELDS
from wxapp.security import derive_key

ADMIN_KEY = "test-admin-key-0001"
KIOSK_KEY = "test-kiosk-key-0001"
GATE_KEY = "test-gate-key-0001"
ADMIN_USER, ADMIN_PASSWORD = "admin", "correct horse battery"


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**fields): override fields of the test's Config")


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    """A SecantusDB and a redis-server for the whole session, on free ports in a temporary folder."""
    root = tmp_path_factory.mktemp("databases")
    redis = RedisProcess(root / "redis")
    mongo = MongoProcess(root / "mongo")
    redis.start()
    try:
        mongo.start()
    except BaseException:
        redis.stop()
        raise
    yield SimpleNamespace(mongo_uri=mongo.uri, redis_url=redis.url, mongo=mongo, redis=redis)
    mongo.stop()
    redis.stop()


@pytest.fixture
def servers(tmp_path):
    """Start `python server.py` processes (`servers(DATA_DIR=...)`); whatever is left is killed afterwards."""
    started = []

    def make(**env) -> Server:
        server = Server(tmp_path, **env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def fakes(io_loop):
    """Local WeChat, Koala and Aliyun SMS servers on this test's IOLoop."""
    wechat, koala, sms = FakeWeChat(), FakeKoala(), FakeSms()
    for fake in (wechat, koala, sms):
        fake.start()
    yield SimpleNamespace(wechat=wechat, koala=koala, sms=sms)
    for fake in (wechat, koala, sms):
        fake.stop()


@pytest.fixture
def config(request, databases, fakes, tmp_path) -> Config:
    """The configuration of this test's app: its own database, the fakes, known keys and admin."""
    cfg = Config(
        data_dir=tmp_path / "var",
        mongo_uri=databases.mongo_uri,
        mongo_db="test_" + uuid.uuid4().hex[:12],
        redis_url=databases.redis_url,
        secret_key="test-secret-key-" + uuid.uuid4().hex,
        api_keys=(("admin", ADMIN_KEY), ("kiosk", KIOSK_KEY), ("gate", GATE_KEY)),
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
        wechat_app_id=fakes.wechat.app_id,
        wechat_app_secret=fakes.wechat.app_secret,
        wechat_token="test-token",
        wechat_api_base_url=fakes.wechat.url,
        wechat_oauth_base_url=fakes.wechat.url + "connect/",
        sms_backend="aliyun",
        aliyun_sms_endpoint=fakes.sms.url,
        aliyun_access_key_id=fakes.sms.access_key_id,
        aliyun_access_key_secret="fake-secret",
        sms_sign_name="访客预约",
        http_timeout=5.0,
    )
    marker = request.node.get_closest_marker("config")
    return dataclasses.replace(cfg, **marker.kwargs) if marker else cfg


@pytest.fixture
def clock() -> Clock:
    """The app's clock; tests move it to reach a visit's window or pass its end."""
    return Clock()


@pytest.fixture
def app_context(io_loop, config, clock):
    """The application built as server.py builds it; its database is dropped afterwards."""
    context = io_loop.run_sync(lambda: build_context(config, clock=clock))
    io_loop.run_sync(context.clients.redis.flushdb)
    yield context
    io_loop.run_sync(context.clients.storage.drop)
    io_loop.run_sync(context.close)


@pytest.fixture(params=["connection", "handler"])
def gate_path(request, io_loop, ctx, monkeypatch):
    """Run a gate test over both paths of a scan: the connection's (handlers.gatepath, with this
    process's near cache listening so that it can answer) and GateHandler's alone."""
    if request.param == "handler":
        monkeypatch.setattr(gatepath.Application, "start_request", gatepath.Application.route)
        yield request.param
        return
    listening: list[asyncio.Future] = []

    async def listen():
        listening.extend([asyncio.ensure_future(ctx.near.listen()), asyncio.ensure_future(ctx.near.beat())])
        while not ctx.near.live:
            await asyncio.sleep(0.01)
    io_loop.run_sync(listen, timeout=5)
    yield request.param
    for task in listening:
        task.cancel()
    io_loop.run_sync(lambda: asyncio.gather(*listening, return_exceptions=True))


@pytest.fixture
def ctx(app_context):
    """The services, as handlers see them (`self.ctx`)."""
    return app_context.services


@pytest.fixture
def background(app_context):
    """The app's background runner (delivery, near cache, revocation feed, periodic jobs); tests start it."""
    return app_context.background


@pytest.fixture
def app(ctx):
    """The Tornado application under test."""
    return make_app(ctx)


@pytest.fixture
def http_server(io_loop, app, config, _unused_port):
    """The app served as server.py serves it (forwarded headers believed from TRUSTED_PROXIES only)."""
    server = ProxiedHTTPServer(app, trusted_proxies=config.trusted_proxies)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections)


@pytest.fixture
def client(http_client, base_url):
    """A fresh cookie-keeping client; call it for more than one."""
    def new(**kwargs) -> Browser:
        return Browser(http_client, base_url, public_url=CLOUD_URL, **kwargs)
    return new


@pytest.fixture
def anonymous(client) -> Browser:
    """A caller with no key and no session."""
    return client()


@pytest.fixture
def wechat_login(client, fakes):
    """Log a WeChat user in through the real OAuth redirects; returns their Browser."""
    async def login(openid: str = "o-visitor-1", nickname: str = "张三", next_url: str = "/h5/") -> Browser:
        fakes.wechat.add_user(openid, nickname=nickname, headimgurl=f"https://wx.qlogo.cn/{openid}.png")
        fakes.wechat.login_as(openid)
        browser = client()
        start = await browser.fetch("/wechat/oauth?next=" + next_url)
        assert start.status == 302, start
        authorize = await browser.fetch(start.location)  # WeChat's page, which sends the code back
        assert authorize.status == 302, authorize
        callback = await browser.fetch(authorize.location)
        assert callback.status == 302, callback
        assert callback.location == next_url
        return browser
    return login


@pytest.fixture
def admin_login(client):
    """Log into /admin with the seeded admin user; returns the Browser (with its XSRF cookie)."""
    async def login(username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Browser:
        browser = client()
        page = await browser.fetch("/admin/login")
        assert page.status == 200
        resp = await browser.fetch("/admin/login", "POST", form={
            "username": username, "password": password, "_xsrf": browser.cookie("_xsrf")})
        assert resp.status == 302, resp
        return browser
    return login


CLOUD_URL = "https://visit.example.com"
TEMPLATE_IDS = {name: f"TPL_{name}" for name in TEMPLATE_ID_FIELDS}


@pytest.fixture
def configured(io_loop, ctx, fakes):
    """Servers settings pointing at the local Koala, and every message template set."""
    async def save():
        await ctx.system_settings.save_servers({
            "koala_ip": fakes.koala.url.removeprefix("http://").rstrip("/"),
            "koala_username": fakes.koala.username, "koala_password": fakes.koala.password,
            "cloud_url": CLOUD_URL,
        })
        await ctx.system_settings.save_templates({**TEMPLATE_IDS, "verify_code_sms_id": "SMS_CODE"})
    io_loop.run_sync(save)
    return ctx


def last_code(fakes, phone: str) -> str:
    """The verification code the local SMS server last received for `phone`."""
    sent = [m for m in fakes.sms.sent if m["phone"] == phone and m["template_code"] == "SMS_CODE"]
    assert sent, f"no verification code was sent to {phone}"
    return sent[-1]["params"]["code"]


@pytest.fixture
def bind_visitor(wechat_login, fakes, configured):
    """Log a WeChat user in and bind them as a visitor with an SMS code; returns their Browser."""
    async def bind(openid: str = "o-visitor", phone: str = "13900000001", nickname: str = "访客小张") -> Browser:
        browser = await wechat_login(openid, nickname)
        assert (await browser.fetch("/v1/sms/code", "POST", json={"phone": phone})).json()["code"] == 0
        resp = await browser.fetch("/v1/visitor/binding", "POST", json={
            "weixinUserId": openid, "phone": phone, "code": last_code(fakes, phone)})
        assert resp.json()["code"] == 0, resp
        browser.openid, browser.phone = openid, phone
        return browser
    return bind


@pytest.fixture
def bind_employee(wechat_login, fakes, configured):
    """Add an employee to the local Koala, log them into WeChat and bind; returns their Browser."""
    async def bind(openid: str = "o-employee", name: str = "李经理", phone: str = "13800000002",
                   department: str = "市场部") -> Browser:
        fakes.koala.add_employee(name, phone, department=department)
        browser = await wechat_login(openid, name)
        assert (await browser.fetch("/v1/sms/code", "POST", json={"phone": phone})).json()["code"] == 0
        resp = await browser.fetch("/v1/subject/binding", "POST", json={
            "weixinUserId": openid, "name": name, "phone": phone, "code": last_code(fakes, phone)})
        assert resp.json()["code"] == 0, resp
        browser.openid, browser.phone, browser.name = openid, phone, name
        return browser
    return bind


@pytest.fixture
def people(bind_visitor, bind_employee):
    """A bound employee (李经理, 13800000002) and a bound visitor (13900000001)."""
    async def make():
        employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
        visitor = await bind_visitor("o-v1", "13900000001")
        return visitor, employee
    return make


@pytest.fixture
def journey(bind_visitor, bind_employee, clock, anonymous):
    """Apply, authorize and sign in; each step's notifications wait in the outbox."""
    async def run(sign_in=True):
        employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
        visitor = await bind_visitor("o-v1", "13900000001", "访客小张")
        now = int(clock())
        rid = (await visitor.fetch("/v1/subject", "POST", json={
            "subject_type": 1, "name": "张三", "phone": "13900000001", "proposer": "13900000001",
            "interviewee": "李经理", "interviewee_phone": "13800000002", "start_time": now - 600,
            "end_time": now + 3600, "purpose": 2, "come_from": "星辰科技",
            "retinues": [{"name": "随行一", "phone": "13700000011"}, {"name": "随行二", "phone": "13700000012"}],
        })).json()["data"]["id"]
        await employee.fetch(f"/v1/auth/{rid}", "PUT")
        if sign_in:
            await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
        return rid
    return run


@pytest.fixture
def session_of(client, ctx):
    """A Browser holding a WeChat session for `openid`, made directly (the login itself is tested elsewhere)."""
    async def make(openid: str) -> Browser:
        sid = await ctx.wechat_sessions.create({"openid": openid})
        secret = derive_key(ctx.config.secret_key, "cookie-signing").hex()
        browser = client()
        browser.set_cookie("wx_session", create_signed_value(secret, "wx_session", sid).decode())
        return browser
    return make
