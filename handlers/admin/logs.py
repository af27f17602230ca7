"""/admin/notifications (the outbox, with a retry for failed messages) and /admin/passes (the gate log)."""
from __future__ import annotations

import math
import re
from urllib.parse import urlencode

from wxapp.errors import ApiError
from wxapp.gate import MESSAGES
from wxapp.events import CHANNEL_LABELS, EVENT_LABELS
from wxapp.outbox import STATUS_LABELS as OUTBOX_STATUS_LABELS
from wxapp.outbox import RETRYABLE, STATUSES
from wxapp.validation import RECORD_ID, Field

from .base import AdminPageHandler, mask_phone

NOTIFICATIONS_PER_PAGE = 20
PASSES_PER_PAGE = 100
# Bootstrap colours of the outbox statuses.
STATUS_STYLES = {"pending": "primary", "sending": "info", "sent": "success", "failed": "danger",
                 "skipped": "warning", "cancelled": "secondary"}
# The result filter of the gate log: its value in the query -> `allowed` of PassLog.search.
RESULTS = {"": None, "allowed": True, "refused": False}


def checked(field: Field, text: str, message: str) -> int:
    """A query argument checked by the field /v1 uses for it; 400 with the page's own `message` otherwise."""
    try:
        return field.parse(text, textual=True)
    except ApiError:
        raise ApiError(400, message) from None


def recipient(entry: dict) -> str:
    """Whom a notification goes to, without showing it whole: a masked phone or a shortened openid."""
    to = entry["to"]
    if entry["channel"] == "sms":
        return mask_phone(to)
    return to[:6] + "…" + to[-4:] if len(to) > 12 else to


def cursor(before: str, skip: str) -> tuple[float, int]:
    """The gate log's paging position: a Unix time and how many entries of that time were shown."""
    try:
        time = float(before)
    except ValueError:
        time = math.nan
    if not math.isfinite(time) or not re.fullmatch(r"[0-9]{0,6}", skip):
        raise ApiError(400, "翻页位置无效，请从第一页重新查看")
    return time, int(skip or 0)


def position(time: str, entry_id: str) -> tuple[float, str]:
    """A notification's place in the list, from the page's query: its creation time and its id."""
    try:
        created = float(time)
    except ValueError:
        created = math.nan
    if not math.isfinite(created) or not entry_id or len(entry_id) > 128:
        raise ApiError(400, "翻页位置无效，请从第一页重新查看")
    return created, entry_id


class NotificationsPage(AdminPageHandler):
    """What the notification list and its retry form share: rendering the list."""

    nav = "/admin/notifications"

    async def show(self, status: str, before: str = "", after: str = "", entry_id: str = "", error: str = "",
                   code: int = 200) -> None:
        """Render a page of the outbox, newest first, optionally of one status: the newest entries, or
        those older than the entry (`before`, `entry_id`) or newer than it (`after`, `entry_id`)."""
        if status and status not in STATUSES:
            raise ApiError(400, "未知的发送状态")
        kept = {"status": status} if status else {}
        cursor = {"before": position(before, entry_id)} if before else \
            {"after": position(after, entry_id)} if after else {}
        entries, more = await self.ctx.outbox.browse(status or None, NOTIFICATIONS_PER_PAGE, **cursor)

        def link(direction: str, entry: dict) -> str:
            return "/admin/notifications?" + urlencode({**kept, direction: repr(entry["created_at"]), "id": entry["_id"]})

        self.render_admin(
            "admin/notifications.html", status=code, entries=entries, current=status, error=error,
            latest=("/admin/notifications?" + urlencode(kept)).rstrip("?") if more["newer"] else "",
            newer=link("after", entries[0]) if entries and more["newer"] else "",
            older=link("before", entries[-1]) if entries and more["older"] else "",
            statuses=STATUSES, status_labels=OUTBOX_STATUS_LABELS, styles=STATUS_STYLES,
            event_labels=EVENT_LABELS, channel_labels=CHANNEL_LABELS, retryable=RETRYABLE, recipient=recipient,
        )


class NotificationsHandler(NotificationsPage):
    """GET /admin/notifications?status=&before=|after=&id=: the outbox, newest first, 20 at a time;
    "更早的通知" continues after the last one shown, "较新的通知" before the first."""

    async def get(self):
        await self.show(*(self.get_query_argument(name, "") for name in ("status", "before", "after", "id")))


class RetryHandler(NotificationsPage):
    """POST /admin/notifications/<id>/retry: queue a failed or skipped notification again
    (what POST /v1/notifications/{id}/retry does), then back to the list."""

    async def post(self, entry_id: str):
        status = self.form("status")["status"]
        try:
            await self.ctx.outbox.retry(entry_id)
        except ApiError as exc:
            await self.show(status, error=exc.message, code=exc.status)
            return
        args = {"status": status} if status else {}
        self.redirect("/admin/notifications?" + urlencode({**args, "done": "retried"}))


class PassesHandler(AdminPageHandler):
    """GET /admin/passes?date=&gate=&result=&record=&before=&skip=: one day's gate decisions,
    newest first, 100 at a time; "更早的记录" continues after the last one shown."""

    nav = "/admin/passes"

    async def get(self):
        form = {name: self.get_query_argument(name, "").strip()
                for name in ("date", "gate", "result", "record", "before", "skip")}
        form["date"] = form["date"] or self.today().isoformat()
        filters = {name: form[name] for name in ("date", "gate", "result", "record") if form[name]}
        page = {"form": form, "latest": "/admin/passes?" + urlencode(filters), "messages": MESSAGES}
        try:
            search = self.search_of(form)
        except ApiError as exc:
            self.render_admin("admin/passes.html", status=exc.status, error=exc.message, entries=[], earlier="",
                              **page)
            return
        entries = await self.ctx.pass_log.search(**search, limit=PASSES_PER_PAGE + 1)
        shown = entries[:PASSES_PER_PAGE]
        earlier = self.earlier_url(filters, search, shown) if len(entries) > len(shown) else ""
        self.render_admin("admin/passes.html", error="", entries=shown, earlier=earlier, **page)

    def search_of(self, form: dict) -> dict:
        """PassLog.search's arguments from the filters; 400 with a Chinese message when malformed."""
        start, end = self.day_bounds(form["date"], "通行日期")
        if form["result"] not in RESULTS:
            raise ApiError(400, "通行结果应为 全部、放行 或 拒绝")
        record = checked(RECORD_ID.fields[0], form["record"], "访客记录编号应为正整数") if form["record"] else None
        search = {"start": start, "end": end, "gate": form["gate"] or None,
                  "allowed": RESULTS[form["result"]], "record_id": record}
        if form["before"]:
            search["before"], search["skip"] = cursor(form["before"], form["skip"])
        return search

    @staticmethod
    def earlier_url(filters: dict, search: dict, shown: list[dict]) -> str:
        """The link to the entries after the last one shown: the same filters and a time cursor."""
        last = shown[-1]["time"]
        skip = sum(1 for e in shown if e["time"] == last)
        if search.get("before") == last:  # this whole page had the cursor's time: count those shown before too
            skip += search["skip"]
        return "/admin/passes?" + urlencode({**filters, "before": repr(last), "skip": skip})


default_handlers = [
    (r"/admin/notifications", NotificationsHandler),
    (r"/admin/notifications/(?P<entry_id>[^/]+)/retry", RetryHandler),
    (r"/admin/passes", PassesHandler),
]
