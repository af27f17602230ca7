"""The H5 pages over HTTP: login redirects, who sees what, page weight."""
import pytest



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
