"""System settings and API keys in /admin, in a real headless Chromium on a desktop screen."""
import asyncio
import re

import pytest

from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, ADMIN_USER
from tests.phone import desktop, log_into_admin

TIMEOUT = 120


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_saves_servers_and_tests_the_koala_connection(http_server, base_url, request, configured,
                                                                  fakes, anonymous):
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, "/admin/settings")
        assert await page.input_value("#koala_password") == ""
        assert await page.is_visible("text=已设置，留空则不修改")
        await p.shot("settings")

        await page.fill("#cloud_url", "https://visit.example.org")
        await page.click("text=保存服务器设置")
        await page.wait_for_url(base_url + "/admin/settings?done=servers_saved")
        assert await page.is_visible("text=服务器设置已保存。")
        assert await page.input_value("#cloud_url") == "https://visit.example.org"
        servers = (await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY)).json()["data"]
        assert servers["cloud_url"] == "https://visit.example.org"
        await p.shot("servers-saved")

        await page.click("text=测试考拉连接")
        await page.wait_for_url(base_url + "/admin/settings/koala-test")
        assert "连接成功：已登录考拉并读取员工列表" in await page.inner_text("#koala-test")
        await p.shot("koala-ok")

        await page.fill("#koala_password", "wrong-password")
        await page.click("text=测试考拉连接")
        await page.wait_for_selector("#koala-test.alert-danger")
        assert "用户名或密码错误" in await page.inner_text("#koala-test")
        assert await page.input_value("#koala_password") == ""
        await p.shot("koala-wrong-password")
        assert not p.unexpected_errors()


@pytest.mark.gen_test(timeout=TIMEOUT)
async def test_admin_creates_a_gate_key_and_revokes_it(http_server, base_url, request, anonymous):
    async with desktop(request.node.name) as p:
        page = p.page
        await log_into_admin(p, base_url, ADMIN_USER, ADMIN_PASSWORD, "/admin/keys")
        await p.shot("keys")

        await page.fill("#name", "一号门闸机")
        await page.select_option("#role", "gate")
        await page.click("text=创建密钥")
        await page.wait_for_url(base_url + "/admin/keys")
        key = (await page.inner_text("#plain-key")).strip()
        assert re.fullmatch(r"vk_[\w-]+", key)
        assert await page.is_visible("text=请立即复制保存，此密钥只显示这一次")
        await p.shot("key-created")
        scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x"}, key=key)
        assert scan.json()["code"] == -201

        await page.click("text=我已保存，返回密钥列表")
        row = page.locator("#keys tr", has_text="一号门闸机")
        assert "有效" in await row.inner_text()
        assert key not in await page.content()
        await p.shot("key-listed")

        dialogs = []
        page.once("dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.accept())))
        await row.locator("text=停用").click()
        await page.wait_for_url(base_url + "/admin/keys?done=key_revoked")
        assert "一号门闸机" in dialogs[0]
        assert "已停用" in await page.locator("#keys tr", has_text="一号门闸机").inner_text()
        assert (await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": "x"}, key=key)).status == 401
        await p.shot("key-revoked")
        assert not p.unexpected_errors()
