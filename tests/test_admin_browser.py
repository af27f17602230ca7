"""An admin's day in /admin, in a real headless Chromium on a desktop screen."""
import pytest

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER
from tests.phone import desktop, log_into_admin

TIMEOUT = 120


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_logs_in_sees_today_and_logs_out(http_server, base_url, request):
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD)
        assert "今日概览" in await page.inner_text("h1")
        assert await page.is_visible("svg.chart")
        await p.shot("home")
        await page.click("text=退出登录")
        await page.wait_for_url(base_url + "/admin/login")
        await page.goto(base_url + "/admin/")
        await page.wait_for_url(f"{base_url}/admin/login?next=/admin/")
        assert not p.unexpected_errors()
