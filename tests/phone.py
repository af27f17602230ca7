"""Browsers for page tests, Debian's headless Chromium driven by Playwright: a phone in WeChat
(375×667, WeChat's user agent) for the H5 pages, a desktop (1366×900) for /admin. Screenshots of
every page go to artifacts/screenshots/<test>/. A test fails when a page broke its Content-Security-Policy."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) NetType/WIFI Language/zh_CN")
# The machine has no network but loopback: keep Chromium from trying to reach Google.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


class Phone:
    """One page in the phone's browser, with the console errors it produced."""

    def __init__(self, page, folder: Path):
        self.page = page
        self.folder = folder
        self.errors: list[str] = []
        self.shots = 0
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def csp_violations(self) -> list[str]:
        """What the Content-Security-Policy refused on the pages visited (Chromium reports each on the console)."""
        return [e for e in self.errors if "Content Security Policy" in e]

    def unexpected_errors(self, *expected_statuses: int) -> list[str]:
        """Console errors, leaving out failed loads with a status the test provoked on purpose
        (Chromium logs every 4xx answer of fetch() as an error)."""
        expected = tuple(f"status of {status} " for status in expected_statuses)
        return [e for e in self.errors if not (e.startswith("Failed to load resource") and any(x in e for x in expected))]

    async def shot(self, label: str) -> None:
        """Save a full-page screenshot (artifacts, not committed)."""
        self.shots += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(self.folder / f"{self.shots:02d}-{label}.png"), full_page=True)


@contextlib.asynccontextmanager
async def _browser(test_name: str, **context_options):
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", test_name)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(locale="zh-CN", **context_options)
            p = Phone(await context.new_page(), folder)
            yield p
            assert not p.csp_violations(), p.csp_violations()  # every page works under its CSP
        finally:
            await browser.close()


def phone(test_name: str):
    """Open a phone browser in WeChat; closed afterwards."""
    return _browser(test_name, viewport={"width": 375, "height": 667}, user_agent=WECHAT_UA,
                    device_scale_factor=2, is_mobile=True, has_touch=True)


def desktop(test_name: str):
    """Open a desktop browser (the admin's); closed afterwards. Downloads are allowed."""
    return _browser(test_name, viewport={"width": 1366, "height": 900}, accept_downloads=True)


async def log_into_admin(p: Phone, base_url: str, username: str, password: str, path: str = "/admin/") -> None:
    """Open an /admin page in the desktop browser, logging in on the way."""
    page = p.page
    await page.goto(base_url + path)
    await page.wait_for_url(re.compile(r"/admin/login\?"))
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: url.startswith(base_url + "/admin") and "/admin/login" not in url)
