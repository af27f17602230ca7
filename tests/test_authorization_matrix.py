"""CONTRACT §4 as one table: every /v1 endpoint × every kind of caller → allowed, 401 or 403.

A cell marked OK only has to get past authorization: the call may still answer 400/404/409
(bodies are minimal), but never 401 or 403. A refused cell must answer exactly 401 (no identity)
or 403 (an identity with the wrong role, or a WeChat user without the needed binding), with the
envelope `code` equal to the HTTP status. Callers and records are built lazily, per cell."""
from __future__ import annotations

import dataclasses
import re
import time

import pytest

from tests.conftest import ADMIN_KEY, GATE_KEY, KIOSK_KEY, TEMPLATE_IDS, last_code
from tests.support import Browser, Response

OK = "ok"
CALLERS = ("anonymous", "stranger", "visitor", "employee", "kiosk", "gate", "admin", "admin_session")

# CONTRACT §4, one row per endpoint, one column per caller (in the order of CALLERS).
#                                         anonymous stranger visitor employee kiosk gate admin admin_session
MATRIX = {
    "GET /v1/subject/binding":               (401, OK,  OK,  OK,  403, 403, 403, 403),
    "POST /v1/subject/binding":              (401, OK,  OK,  OK,  403, 403, 403, 403),
    "GET /v1/visitor/binding":               (401, OK,  OK,  OK,  403, 403, 403, 403),
    "POST /v1/visitor/binding":              (401, OK,  OK,  OK,  403, 403, 403, 403),
    "DELETE /v1/subject/binding/{openid}":   (401, OK,  OK,  OK,  403, 403, 403, 403),
    "GET /v1/wechat/is_binding":             (401, OK,  OK,  OK,  403, 403, 403, 403),
    "POST /v1/sms/code":                     (401, OK,  OK,  OK,  403, 403, 403, 403),
    "POST /v1/subject":                      (401, 403, OK,  OK,  403, 403, 403, 403),
    "GET /v1/visit/records?type=mobile":     (401, 403, OK,  OK,  403, 403, OK,  OK),
    "GET /v1/visit/records?type=web":        (401, 403, 403, 403, 403, 403, OK,  OK),
    "GET /v1/auth/records":                  (401, 403, 403, OK,  403, 403, OK,  OK),
    "PUT /v1/auth/{id}":                     (401, 403, 403, OK,  403, 403, OK,  OK),
    "DELETE /v1/visit/records/{id}":         (401, 403, 403, 403, 403, 403, OK,  OK),
    "POST /v1/visit/signin":                 (401, 403, 403, 403, OK,  403, OK,  OK),
    "POST /v1/visit/qrcode":                 (401, 403, 403, 403, OK,  OK,  OK,  OK),
    "POST /v1/auth/{id}/decline":            (401, 403, 403, OK,  403, 403, OK,  OK),
    # The record is the visitor's application: the employee is not its proposer.
    "POST /v1/visit/records/{id}/cancel":    (401, 403, OK,  403, 403, 403, OK,  OK),
    "POST /v1/visit/signout":                (401, 403, 403, 403, OK,  403, OK,  OK),
    "GET /v1/config/servers":                (401, 403, 403, 403, 403, 403, OK,  OK),
    "PUT /v1/config/servers":                (401, 403, 403, 403, 403, 403, OK,  OK),
    "GET /v1/config/templates":              (401, 403, 403, 403, 403, 403, OK,  OK),
    "PUT /v1/config/templates":              (401, 403, 403, 403, 403, 403, OK,  OK),
    "GET /v1/config/retention":              (401, 403, 403, 403, 403, 403, OK,  OK),
    "PUT /v1/config/retention":              (401, 403, 403, 403, 403, 403, OK,  OK),
    "GET /v1/notifications":                 (401, 403, 403, 403, 403, 403, OK,  OK),
    "POST /v1/notifications/{id}/retry":     (401, 403, 403, 403, 403, 403, OK,  OK),
    "GET /v1/openapi.json":                  (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
}
assert all(len(row) == len(CALLERS) for row in MATRIX.values())

VISITOR_OPENID, VISITOR_PHONE = "o-visitor", "13900000001"
EMPLOYEE_OPENID, EMPLOYEE_NAME, EMPLOYEE_PHONE = "o-employee", "李经理", "13800000002"
STRANGER_OPENID = "o-stranger"
NOBODY = "o-nobody"
KEYS = {"kiosk": KIOSK_KEY, "gate": GATE_KEY, "admin": ADMIN_KEY}


@dataclasses.dataclass
class Caller:
    """Who calls: a browser (with its cookies), perhaps an API key, and who they are in WeChat."""

    browser: Browser
    key: str | None = None
    openid: str | None = None
    phone: str | None = None
    name: str | None = None

    async def fetch(self, path: str, method: str = "GET", json=None) -> Response:
        return await self.browser.fetch(path, method, json=json, key=self.key)


class World:
    """The people and records a cell needs, each made on first use only."""

    def __init__(self, client, wechat_login, bind_visitor, bind_employee, admin_login, fakes, ctx):
        self.client, self.wechat_login, self.admin_login = client, wechat_login, admin_login
        self.bind_visitor, self.bind_employee = bind_visitor, bind_employee
        self.fakes, self.ctx = fakes, ctx
        self._visitor: Caller | None = None
        self._employee: Caller | None = None
        self._interviewee_known = False
        self._record_id: int | None = None

    async def visitor(self) -> Caller:
        if self._visitor is None:
            browser = await self.bind_visitor(VISITOR_OPENID, VISITOR_PHONE)
            self._visitor = Caller(browser, openid=VISITOR_OPENID, phone=VISITOR_PHONE)
        return self._visitor

    async def employee(self) -> Caller:
        if self._employee is None:
            assert not self._interviewee_known, "bind the employee before anything adds them to Koala"
            browser = await self.bind_employee(EMPLOYEE_OPENID, EMPLOYEE_NAME, EMPLOYEE_PHONE)  # adds to Koala
            self._employee = Caller(browser, openid=EMPLOYEE_OPENID, phone=EMPLOYEE_PHONE, name=EMPLOYEE_NAME)
            self._interviewee_known = True
        return self._employee

    def ensure_interviewee(self) -> None:
        """The employee exists in Koala (bound or not), so a visitor can apply to them."""
        if not self._interviewee_known:
            self.fakes.koala.add_employee(EMPLOYEE_NAME, EMPLOYEE_PHONE)
            self._interviewee_known = True

    async def caller(self, kind: str) -> Caller:
        if kind == "anonymous":
            return Caller(self.client())
        if kind in KEYS:
            return Caller(self.client(), key=KEYS[kind])
        if kind == "admin_session":
            return Caller(await self.admin_login())
        if kind == "stranger":
            return Caller(await self.wechat_login(STRANGER_OPENID, "路人"), openid=STRANGER_OPENID)
        if kind == "visitor":
            return await self.visitor()
        if kind == "employee":
            return await self.employee()
        raise AssertionError(kind)

    async def sms_code(self, me: Caller, phone: str) -> str:
        """A real verification code for a logged-in but unbound WeChat user; a dummy one for the rest."""
        if me.openid is None or me.phone is not None:
            return "000000"  # refused before the code matters, or already bound (409)
        assert (await me.fetch("/v1/sms/code", "POST", json={"phone": phone})).json()["code"] == 0
        return last_code(self.fakes, phone)

    async def record_id(self) -> int:
        """A pending application: the visitor applies to visit the employee."""
        if self._record_id is None:
            visitor = await self.visitor()
            self.ensure_interviewee()
            resp = await visitor.fetch("/v1/subject", "POST", json=visitor_application())
            assert resp.status == 200 and resp.json()["code"] == 0, resp
            self._record_id = resp.json()["data"]["id"]
        return self._record_id


def visitor_application() -> dict:
    now = int(time.time())
    return {"subject_type": 1, "name": "访客小张", "phone": VISITOR_PHONE, "proposer": VISITOR_PHONE,
            "interviewee": EMPLOYEE_NAME, "interviewee_phone": EMPLOYEE_PHONE,
            "start_time": now - 600, "end_time": now + 3600, "retinues": []}


def employee_invitation(me: Caller) -> dict:
    now = int(time.time())
    return {"subject_type": 1, "name": "访客小王", "phone": "13700000008", "proposer": me.phone,
            "interviewee": me.name, "interviewee_phone": me.phone,
            "start_time": now - 600, "end_time": now + 3600, "retinues": []}


# How each endpoint is called by `me`: (method, path, json body). Valid bodies where that is cheap.
async def _request(endpoint: str, me: Caller, world: World) -> tuple[str, str, dict | None]:
    own = me.openid or NOBODY
    if endpoint == "GET /v1/subject/binding":
        return "GET", f"/v1/subject/binding?weixinUserId={own}", None
    if endpoint == "POST /v1/subject/binding":
        world.fakes.koala.add_employee("王五", "13600000003")
        return "POST", "/v1/subject/binding", {"weixinUserId": own, "name": "王五", "phone": "13600000003",
                                               "code": await world.sms_code(me, "13600000003")}
    if endpoint == "GET /v1/visitor/binding":
        return "GET", f"/v1/visitor/binding?weixinUserId={own}", None
    if endpoint == "POST /v1/visitor/binding":
        return "POST", "/v1/visitor/binding", {"weixinUserId": own, "phone": "13600000004",
                                               "code": await world.sms_code(me, "13600000004")}
    if endpoint == "DELETE /v1/subject/binding/{openid}":
        return "DELETE", f"/v1/subject/binding/{own}", None
    if endpoint == "GET /v1/wechat/is_binding":
        return "GET", f"/v1/wechat/is_binding?weixinUserId={own}", None
    if endpoint == "POST /v1/sms/code":
        return "POST", "/v1/sms/code", {"phone": "13700000009"}
    if endpoint == "POST /v1/subject":
        if me.name:  # the bound employee invites a visitor
            return "POST", "/v1/subject", employee_invitation(me)
        world.ensure_interviewee()
        return "POST", "/v1/subject", visitor_application()
    if endpoint == "GET /v1/visit/records?type=mobile":
        return "GET", f"/v1/visit/records?type=mobile&proposer={me.phone or VISITOR_PHONE}", None
    if endpoint == "GET /v1/visit/records?type=web":
        return "GET", "/v1/visit/records?type=web", None
    if endpoint == "GET /v1/auth/records":
        return "GET", "/v1/auth/records", None
    if endpoint == "PUT /v1/auth/{id}":
        return "PUT", f"/v1/auth/{await world.record_id()}", None
    if endpoint == "POST /v1/auth/{id}/decline":
        return "POST", f"/v1/auth/{await world.record_id()}/decline", {"reason": "时间冲突"}
    if endpoint == "POST /v1/visit/records/{id}/cancel":
        return "POST", f"/v1/visit/records/{await world.record_id()}/cancel", None
    if endpoint == "POST /v1/visit/signout":
        return "POST", "/v1/visit/signout", {"phone": VISITOR_PHONE}
    if endpoint == "DELETE /v1/visit/records/{id}":
        return "DELETE", f"/v1/visit/records/{await world.record_id()}", None
    if endpoint == "POST /v1/visit/signin":
        await world.ctx.visits.authorize(await world.record_id(), None)  # approved, so sign-in can answer 0
        return "POST", "/v1/visit/signin", {"phone": VISITOR_PHONE}
    if endpoint == "POST /v1/visit/qrcode":
        return "POST", "/v1/visit/qrcode", {"qrcode": "not-a-visitor-code", "gate": "east"}
    if endpoint in ("GET /v1/config/servers", "GET /v1/config/templates", "GET /v1/config/retention"):
        return "GET", endpoint.split(" ", 1)[1], None
    if endpoint == "PUT /v1/config/servers":
        return "PUT", "/v1/config/servers", {
            "koala_ip": world.fakes.koala.url.removeprefix("http://").rstrip("/"),
            "koala_username": world.fakes.koala.username, "koala_password": world.fakes.koala.password,
            "cloud_url": "https://visit.example.org"}
    if endpoint == "PUT /v1/config/templates":
        return "PUT", "/v1/config/templates", {**TEMPLATE_IDS, "verify_code_sms_id": "SMS_CODE_2"}
    if endpoint == "PUT /v1/config/retention":
        return "PUT", "/v1/config/retention", {"retention_days": 30}
    if endpoint == "GET /v1/notifications":
        return "GET", "/v1/notifications", None
    if endpoint == "POST /v1/notifications/{id}/retry":
        await world.record_id()  # the application wrote notifications
        return "POST", "/v1/notifications/approval_reminder_to_employee:1:sms/retry", None
    if endpoint == "GET /v1/openapi.json":
        return "GET", "/v1/openapi.json", None
    raise AssertionError(f"no request for {endpoint}")


@pytest.fixture
def world(client, wechat_login, bind_visitor, bind_employee, admin_login, fakes, ctx):
    return World(client, wechat_login, bind_visitor, bind_employee, admin_login, fakes, ctx)


CELLS = [
    pytest.param(caller, endpoint, expected, id=f"{caller}-{endpoint}")
    for endpoint, row in MATRIX.items()
    for caller, expected in zip(CALLERS, row)
]


@pytest.mark.gen_test
@pytest.mark.parametrize("caller, endpoint, expected", CELLS)
async def test_who_may_call_what(world, caller, endpoint, expected):
    me = await world.caller(caller)
    method, path, body = await _request(endpoint, me, world)
    resp = await me.fetch(path, method, json=body)
    envelope = resp.json()
    if expected == OK:
        assert resp.status not in (401, 403) and envelope.get("code") not in (401, 403), \
            f"{caller} should be allowed to call {method} {path}: {resp!r}"
    else:
        assert (resp.status, envelope["code"]) == (expected, expected), \
            f"{caller} calling {method} {path} should get {expected}: {resp!r}"


@pytest.mark.gen_test
async def test_weixin_user_id_of_someone_else_is_refused(world, ctx):
    victim = await world.visitor()
    stranger = await world.caller("stranger")
    other = victim.openid
    calls = [
        ("GET", f"/v1/subject/binding?weixinUserId={other}", None),
        ("POST", "/v1/subject/binding", {"weixinUserId": other, "name": "王五", "phone": "13600000003",
                                         "code": "000000"}),
        ("GET", f"/v1/visitor/binding?weixinUserId={other}", None),
        ("POST", "/v1/visitor/binding", {"weixinUserId": other, "phone": "13600000004", "code": "000000"}),
        ("DELETE", f"/v1/subject/binding/{other}", None),
        ("GET", f"/v1/wechat/is_binding?weixinUserId={other}", None),
    ]
    for method, path, body in calls:
        resp = await stranger.fetch(path, method, json=body)
        assert (resp.status, resp.json()["code"]) == (403, 403), f"{method} {path}: {resp!r}"
    binding = await ctx.bindings.get(other)
    assert binding is not None and binding["phone"] == VISITOR_PHONE  # nothing was unbound or rebound


@pytest.mark.gen_test
async def test_admin_session_put_without_xsrf_token_is_refused(admin_login, ctx):
    admin = await admin_login()
    before = await ctx.system_settings.templates()
    body = {**TEMPLATE_IDS, "verify_code_sms_id": "SMS_FORGED"}
    for path in ("/v1/config/templates", "/v1/config/servers"):
        resp = await admin.fetch(path, "PUT", json=body, xsrf=False)
        assert (resp.status, resp.json()["code"]) == (403, 403), f"PUT {path}: {resp!r}"
    assert await ctx.system_settings.templates() == before
    # The same session with its token is let through.
    resp = await admin.fetch("/v1/config/templates", "PUT", json=body)
    assert (resp.status, resp.json()["code"]) == (200, 0), resp


def test_the_matrix_covers_every_endpoint():
    from handlers import routes
    from handlers.openapi import build_openapi

    def normalize(key: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", key.split("?", 1)[0])

    documented = {normalize(f"{method.upper()} {path}")
                  for path, operations in build_openapi(routes())["paths"].items() for method in operations}
    assert {normalize(key) for key in MATRIX} == documented


def test_the_document_says_who_may_call_each_endpoint():
    """Each operation's `security` in /v1/openapi.json is exactly the credentials of the callers the
    matrix lets through: the WeChat session cookie, the admin session cookie, an API key, or none."""
    from handlers import routes
    from handlers.openapi import build_openapi

    schemes_of = {"stranger": "wechatSession", "visitor": "wechatSession", "employee": "wechatSession",
                  "kiosk": "apiKey", "gate": "apiKey", "admin": "apiKey", "admin_session": "adminSession"}
    expected: dict[tuple[str, str], set[str]] = {}
    public: set[tuple[str, str]] = set()
    for endpoint, row in MATRIX.items():
        method, path = endpoint.split("?", 1)[0].split(" ", 1)
        key = (method.lower(), re.sub(r"\{[^}]*\}", "{}", path))
        allowed = {caller for caller, cell in zip(CALLERS, row) if cell == OK}
        if "anonymous" in allowed:
            public.add(key)
        expected.setdefault(key, set()).update(schemes_of[caller] for caller in allowed - {"anonymous"})
    for path, operations in build_openapi(routes())["paths"].items():
        for method, op in operations.items():
            key = (method, re.sub(r"\{[^}]*\}", "{}", path))
            documented = {name for requirement in op["security"] for name in requirement}
            if key in public:
                assert op["security"] == [], key
            else:
                assert documented == expected[key], key
                assert all(len(requirement) == 1 for requirement in op["security"]), key  # any one of them
