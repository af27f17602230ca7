"""What every /admin page shares: the admin session, the layout's values, formats and paging."""
from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote, urlencode

from wxapp.errors import ApiError
from wxapp.privacy import mask_phone
from wxapp.visits import day_bounds
from wxapp.localtime import local_text

from ..base import PageHandler

HOME = "/admin/"

# The navigation bar: (path, label). A page names its entry with `nav = "<path>"`.
NAV = [
    ("/admin/", "概览"),
    ("/admin/records", "访客记录"),
    ("/admin/passes", "通行记录"),
    ("/admin/notifications", "消息通知"),
    ("/admin/koala", "考拉同步"),
    ("/admin/settings", "系统设置"),
    ("/admin/keys", "API 密钥"),
    ("/admin/users", "管理员"),
]

# Messages a page may show after a redirect (`?done=<name>`): fixed texts, so a link cannot inject any.
DONE_MESSAGES = {
    "deleted": "访客记录已删除，其二维码已立即失效。",
    "declined": "已拒绝来访，访客会收到通知。",
    "cancelled": "预约已取消，访客会收到通知。",
    "koala_cleared": "已从考拉删除这些访客。",
    "koala_failing": "考拉仍未能删除这些访客，系统会在后台继续重试。",
    "servers_saved": "服务器设置已保存。",
    "templates_saved": "消息模板设置已保存。",
    "retention_saved": "数据保留期限已保存，将在一分钟内按新期限执行。",
    "key_revoked": "API 密钥已停用，使用它的设备将立即无法调用接口。",
    "user_created": "管理员已添加。",
    "password_changed": "密码已修改，该管理员在其他地方的登录已退出。",
    "retried": "通知已重新排队发送。",
}


class AdminPageHandler(PageHandler):
    """An /admin page: without an admin session the browser is sent to the login page.
    Forms are protected by Tornado's XSRF check (the `_xsrf` field) before any method runs."""

    nav = ""  # the NAV path this page belongs to

    async def prepare(self):
        self.principal = await self._admin_principal()
        if self.principal is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect("/admin/login?next=" + quote(self.request.uri, safe="/"))
            else:  # a form sent after the session ended: log in again, then start over from the page
                self.redirect("/admin/login?next=" + quote(self.request.path, safe="/"))

    # --- rendering -----------------------------------------------------------------------------

    def render_admin(self, template: str, status: int = 200, **values: Any) -> None:
        """Render an admin page inside the layout (navigation, the admin's name, a done message)."""
        done = DONE_MESSAGES.get(self.get_query_argument("done", ""), "")
        self.render_page(
            template, status=status, nav=NAV, active=self.nav, username=self.principal.username,
            done=done, fmt_time=self.fmt_time, fmt_date=self.fmt_date, mask_phone=mask_phone,
            page_url=self.page_url, page_numbers=page_numbers, **values,
        )

    @property
    def tz(self):
        return self.ctx.config.tz

    def fmt_time(self, seconds: float | int | None, with_seconds: bool = False) -> str:
        """A Unix time as the admin reads it, in TIMEZONE; "" for none."""
        return local_text(seconds, self.tz, with_seconds=with_seconds)

    def fmt_date(self, seconds: float | int | None) -> str:
        return local_text(seconds, self.tz, date_only=True)

    def page_url(self, page: int) -> str:
        """This page's URL with the same query and another page number."""
        args = {name: self.get_query_argument(name) for name in self.request.query_arguments
                if name not in ("page", "done")}
        args["page"] = str(page)
        return self.request.path + "?" + urlencode(args)

    # --- forms ---------------------------------------------------------------------------------

    def form(self, *names: str) -> dict[str, str]:
        """The named form fields, stripped ("" when absent)."""
        return {name: self.get_body_argument(name, "").strip() for name in names}

    def day_bounds(self, text: str, field: str) -> tuple[int, int]:
        """When a YYYY-MM-DD day begins and ends in TIMEZONE, as Unix times; 400 when malformed."""
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise ApiError(400, f"{field}应为日期，如 2026-11-29") from None
        try:
            return day_bounds(day, self.tz)
        except OverflowError:  # the last day of year 9999 has no next day
            raise ApiError(400, f"{field}超出范围") from None

    def today(self) -> datetime.date:
        return datetime.datetime.fromtimestamp(self.ctx.clock(), self.tz).date()


def page_numbers(page: dict, around: int = 2) -> list[int | None]:
    """Page links to show for a seed `page` object: the first, the last and a few around the
    current one (None marks a gap)."""
    total, current = max(1, page["total"]), page["current"]
    shown = sorted({1, total, *range(max(1, current - around), min(total, current + around) + 1)})
    out: list[int | None] = []
    for number in shown:
        if out and number - out[-1] > 1:
            out.append(None)
        out.append(number)
    return out
