"""The H5 pages over HTTP: login redirects, who sees what, the course of a visit, page weight."""
import re

import pytest

from tests.conftest import KIOSK_KEY
from tests.test_visits import application



@pytest.mark.gen_test
async def test_a_page_without_a_session_starts_the_wechat_login_and_comes_back(anonymous):
    resp = await anonymous.fetch("/h5/records?x=1")
    assert resp.status == 302
    assert resp.location == "/wechat/oauth?next=/h5/records%3Fx%3D1"


@pytest.mark.gen_test
async def test_the_wechat_login_lands_back_on_the_page(wechat_login, configured):
    browser = await wechat_login("o-new", next_url="/h5/")
    home = await browser.fetch("/h5/")
    assert home.status == 200
    assert "我是访客" in home.text and "我是员工" in home.text


@pytest.mark.gen_test
async def test_every_page_renders_for_its_user(journey, session_of):
    rid = await journey()
    pages_visitor = ["/h5/", "/h5/apply", "/h5/records", f"/h5/records/{rid}", "/h5/me"]
    pages_employee = ["/h5/", "/h5/invite", "/h5/approvals", "/h5/records", f"/h5/records/{rid}", "/h5/me"]
    for openid, pages in (("o-v1", pages_visitor), ("o-e1", pages_employee)):
        browser = await session_of(openid)
        for page in pages:
            resp = await browser.fetch(page)
            assert resp.status == 200, (openid, page, resp)
            assert "<title>" in resp.text


@pytest.mark.gen_test
async def test_record_page_shows_every_persons_qr_code_after_signin(journey, session_of):
    rid = await journey()
    browser = await session_of("o-v1")
    page = (await browser.fetch(f"/h5/records/{rid}")).text
    assert page.count('class="pass"') == 3
    assert "屏幕亮度" in page
    img = page.split('<img src="', 1)[1].split('"', 1)[0]
    assert (await browser.fetch(img)).headers["Content-Type"] == "image/png"


@pytest.mark.gen_test
async def test_someone_elses_record_is_refused(journey, bind_visitor):
    rid = await journey()
    other = await bind_visitor("o-v9", "13900000009")
    resp = await other.fetch(f"/h5/records/{rid}")
    assert resp.status == 403
    assert "不是您的访客记录" in resp.text
    assert 'href="/h5/"' in resp.text


@pytest.mark.gen_test
async def test_pages_are_light_over_the_wire(journey, session_of):
    rid = await journey()
    browser = await session_of("o-v1")
    for path in (f"/h5/records/{rid}", "/h5/apply", "/h5/"):
        total = 0
        for url in (path, "/h5/static/weui/weui.min.css", "/h5/static/app.css", "/h5/static/app.js"):
            resp = await browser.fetch(url, headers={"Accept-Encoding": "gzip"}, decompress=False)
            assert resp.status == 200
            assert resp.headers.get("Content-Encoding") == "gzip", url
            total += len(resp.body)
        assert total < 150 * 1024, (path, total)


HOUR = 3600
APPROVAL = 'class="weui-media-box weui-media-box_text approval"'


def approvals_of(html: str) -> dict[str, dict]:
    """Each visit on /h5/approvals by visitor name: its status and the buttons it offers, in page order."""
    found = {}
    for block in html.split(APPROVAL)[1:]:
        name = re.search(r'<a href="/h5/records/\d+">([^<]+)</a>', block).group(1)
        found[name] = {"status": re.search(r'class="status status-[^"]+">([^<]+)<', block).group(1),
                       "approve": "authorize" in block, "decline": 'class="weui-btn weui-btn_default weui-btn_mini decline"' in block,
                       "text": block}
    return found


@pytest.mark.gen_test(timeout=30)
async def test_approvals_show_each_status_and_offer_only_the_moves_it_allows(bind_visitor, bind_employee, clock):
    employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    ids = {}
    for name, start, length in (("过期", now - 600, 1200), ("待批", now + HOUR, HOUR), ("已批", now + 2 * HOUR, HOUR),
                                ("被拒", now + 3 * HOUR, HOUR), ("撤回", now + 4 * HOUR, HOUR)):
        resp = await visitor.fetch("/v1/subject", "POST", json=application("13900000001", start, start + length, name=name))
        ids[name] = resp.json()["data"]["id"]
    assert (await employee.fetch(f"/v1/auth/{ids['已批']}", "PUT")).json()["code"] == 0
    assert (await employee.fetch(f"/v1/auth/{ids['被拒']}/decline", "POST", json={"reason": "当天出差"})).json()["code"] == 0
    assert (await visitor.fetch(f"/v1/visit/records/{ids['撤回']}/cancel", "POST")).json()["code"] == 0
    clock.advance(1200)  # the first application's window is over while it still waited

    page = await employee.fetch("/h5/approvals")
    assert page.status == 200
    shown = approvals_of(page.text)
    assert list(shown)[0] == "待批"  # what waits for a decision comes first
    assert {name: (s["status"], s["approve"], s["decline"]) for name, s in shown.items()} == {
        "待批": ("待审批", True, True),
        "已批": ("已授权", False, True),
        "被拒": ("已拒绝", False, False),
        "撤回": ("已取消", False, False),
        "过期": ("已过期", False, False),
    }
    assert "拒绝原因：当天出差" in shown["被拒"]["text"]
    # The sheet that asks for the reason: optional, at most 100 characters.
    assert 'id="decline-reason" maxlength="100"' in page.text
    assert "确认拒绝" in page.text and "选填" in page.text


@pytest.mark.gen_test(timeout=30)
async def test_only_the_proposer_is_offered_cancelling_and_the_page_then_shows_it_cancelled(
        journey, session_of, bind_visitor, clock):
    rid = await journey(sign_in=False)
    visitor, employee = await session_of("o-v1"), await session_of("o-e1")
    page = (await visitor.fetch(f"/h5/records/{rid}")).text
    assert 'id="cancel-visit"' in page and "确定取消吗" in page
    assert 'id="cancel-visit"' not in (await employee.fetch(f"/h5/records/{rid}")).text  # the interviewee declines instead
    refused = await employee.fetch(f"/v1/visit/records/{rid}/cancel", "POST")
    assert (refused.status, refused.json()["err_msg"]) == (403, "只有预约的申请人可以取消该预约")
    assert (await visitor.fetch(f"/v1/visit/records/{rid}/cancel", "POST")).json()["code"] == 0
    page = (await visitor.fetch(f"/h5/records/{rid}")).text
    assert "status-已取消" in page and "本次预约已取消" in page
    assert 'id="cancel-visit"' not in page
    # An employee's invitation: the employee proposed it, so the employee may call it off, not the visitor.
    now = int(clock())
    invited = (await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + HOUR, now + 2 * HOUR, proposer="13800000002"))).json()["data"]["id"]
    assert 'id="cancel-visit"' in (await employee.fetch(f"/h5/records/{invited}")).text
    assert 'id="cancel-visit"' not in (await visitor.fetch(f"/h5/records/{invited}")).text


@pytest.mark.gen_test(timeout=30)
async def test_qr_codes_show_only_while_the_visit_is_signed_in(journey, session_of, anonymous):
    rid = await journey(sign_in=False)
    visitor = await session_of("o-v1")
    page = (await visitor.fetch(f"/h5/records/{rid}")).text
    assert 'class="pass"' not in page and 'id="cancel-visit"' in page
    await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    page = (await visitor.fetch(f"/h5/records/{rid}")).text
    assert page.count('class="pass"') == 3 and 'id="cancel-visit"' not in page
    out = await anonymous.fetch("/v1/visit/signout", "POST", json={"phone": "13900000001"}, key=KIOSK_KEY)
    assert out.json()["code"] == 0
    page = (await visitor.fetch(f"/h5/records/{rid}")).text
    assert 'class="pass"' not in page and "/qrcode/" not in page
    assert "status-已签退" in page and "通行二维码已失效" in page


@pytest.mark.gen_test
async def test_my_records_filter_by_status_tab_and_load_more_keeps_the_tab(bind_visitor, bind_employee, clock):
    employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    ids = []
    for name in ("甲一", "乙二", "丙三"):
        resp = await visitor.fetch("/v1/subject", "POST", json=application(
            "13900000001", now + 3600, now + 7200, name=name))
        ids.append(resp.json()["data"]["id"])
    await employee.fetch(f"/v1/auth/{ids[0]}/decline", "POST", json={"reason": "出差"})
    everything = (await visitor.fetch("/h5/records")).text
    assert all(name in everything for name in ("甲一", "乙二", "丙三")) and "进行中" in everything
    closed = (await visitor.fetch("/h5/records?status=closed")).text
    assert "甲一" in closed and "乙二" not in closed and "丙三" not in closed
    open_ = (await visitor.fetch("/h5/records?status=open")).text
    assert "甲一" not in open_ and "乙二" in open_ and "丙三" in open_
    ended = (await visitor.fetch("/h5/records?status=ended")).text
    assert "没有已结束的记录" in ended
    unknown = await visitor.fetch("/h5/records?status=nonsense")
    assert unknown.status == 200 and "丙三" in unknown.text
