"""The H5 pages inside WeChat: binding, applying or inviting, records with QR codes, approvals.

Pages render from MongoDB through the same domain functions as the /v1 API (never waiting on
Koala or WeChat); their forms and buttons call the /v1 API."""
from __future__ import annotations

import datetime

from wxapp import lifecycle
from wxapp.bindings import avatar_path
from wxapp.errors import ApiError
from wxapp.validation import RECORD_ID
from wxapp.visits import PURPOSES

from .base import PageHandler
from .oauth import login_url

PAGE_SIZE = 10


class H5Handler(PageHandler):
    """An H5 page: without a WeChat session it starts the login and comes back here."""

    binding: dict | None = None

    async def prepare(self):
        self.principal = await self._wechat_principal()
        if self.principal is None:
            self.redirect(login_url(self.request.uri))
            return
        self.binding = await self.ctx.bindings.get(self.principal.openid)

    def require(self, kind: str | None) -> bool:
        """Send the user home when the page is for another kind of binding; False then."""
        if self.binding is None or (kind and self.binding["type"] != kind):
            self.redirect("/h5/")
            return False
        return True

    def render_h5(self, template: str, **values) -> None:
        """Render an H5 template with what every page needs."""
        self.render_page(f"h5/{template}", openid=self.principal.openid, binding=self.binding, **values)

    def item(self, record: dict) -> dict:
        """A record as the pages show it: local times, status, QR image paths on this host."""
        tz = self.ctx.config.tz

        def when(ts: int, fmt: str) -> str:
            return datetime.datetime.fromtimestamp(ts, tz).strftime(fmt)

        state = lifecycle.effective(record, self.ctx.clock())
        people = [record, *record["retinues"]]
        return {
            "id": record["_id"], "name": record["name"], "phone": record["phone"],
            "come_from": record["come_from"], "purpose": PURPOSES.get(record["purpose"], "其它"),
            "interviewee": record["interviewee"], "department": record.get("department", ""),
            "date": when(record["start_time"], "%Y-%m-%d"),
            "time": f"{when(record['start_time'], '%H:%M')} - {when(record['end_time'], '%H:%M')}",
            "status": lifecycle.LABELS[state], "state": state, "is_auth": record["is_auth"],
            "pending": state == lifecycle.PENDING,
            # Declining and cancelling are open until sign-in (CONTRACT §9).
            "undecided": state in lifecycle.DECLINE.sources,
            "decline_reason": record.get("decline_reason", "") if state == lifecycle.DECLINED else "",
            "retinues": [r["name"] for r in record["retinues"]],
            "passes": [{"name": p["name"], "phone": p["phone"], "src": f"/qrcode/{p['token']}.png"}
                       for p in people if state == lifecycle.SIGNED_IN and p.get("token")],
        }


class HomeHandler(H5Handler):
    """/h5/: by binding state, to binding or to the visitor's or the employee's menu."""

    def get(self):
        self.render_h5("home.html")


class BindHandler(H5Handler):
    """/h5/bind/employee and /h5/bind/visitor."""

    def get(self, kind: str):
        if self.binding is not None:
            self.redirect("/h5/me")
            return
        self.render_h5(f"bind_{kind}.html", sms_required=self.ctx.codes.required)


class ApplyHandler(H5Handler):
    """/h5/apply (a visitor applies) and /h5/invite (an employee invites)."""

    def get(self, kind: str):
        if not self.require("visitor" if kind == "apply" else "employee"):
            return
        today = datetime.datetime.fromtimestamp(self.ctx.clock(), self.ctx.config.tz).date()
        self.render_h5("apply.html", kind=kind, purposes=PURPOSES, today=today.isoformat())


# The status tabs of "my records": the `status` value in the address, its title, the statuses shown.
RECORD_TABS = {
    "": ("全部", ()),
    "open": ("进行中", (lifecycle.PENDING, lifecycle.APPROVED, lifecycle.SIGNED_IN)),
    "ended": ("已结束", (lifecycle.CHECKED_OUT, lifecycle.NO_SHOW, lifecycle.EXPIRED)),
    "closed": ("拒绝/取消", (lifecycle.DECLINED, lifecycle.CANCELLED)),
}


class RecordsHandler(H5Handler):
    """/h5/records: my records, newest first; `?page=N&more=1` returns the next items only."""

    async def get(self):
        if not self.require(None):
            return
        page = self.page_number()
        tab = self.get_query_argument("status", "")
        if tab not in RECORD_TABS:
            tab = ""
        statuses = RECORD_TABS[tab][1]
        query = self.ctx.visits.filters({"status": statuses}, party=self.binding["phone"])
        records, paging = await self.ctx.visits.find(query, page, PAGE_SIZE)
        values = dict(items=[self.item(r) for r in records], page=paging, tabs=RECORD_TABS, tab=tab)
        self.render_h5("records_more.html" if self.get_query_argument("more", "") else "records.html", **values)


class RecordHandler(H5Handler):
    """/h5/records/{id}: one visit, with every person's QR code."""

    async def get(self, record_id: str):
        if not self.require(None):
            return
        record = await self.ctx.visits.get(RECORD_ID.load({"id": record_id}, textual=True)["id"])
        if not self.ctx.visits.visible_to(record, self.binding):
            raise ApiError(403, "这不是您的访客记录")
        item = self.item(record)
        can_cancel = item["undecided"] and self.ctx.visits.proposed_by(record, self.binding)
        self.render_h5("record.html", item=item, can_cancel=can_cancel)


class ApprovalsHandler(H5Handler):
    """/h5/approvals: the employee's visitors, those waiting for approval first."""

    async def get(self):
        if not self.require("employee"):
            return
        query = self.ctx.visits.filters({"interviewee_phone": self.binding["phone"]})
        records, _ = await self.ctx.visits.find(query, 1, 100)
        items = [self.item(r) for r in records]
        items.sort(key=lambda i: not i["pending"])  # stable: newest first within each group
        self.render_h5("approvals.html", items=items)


class MeHandler(H5Handler):
    """/h5/me: the binding, and unbinding."""

    def get(self):
        if not self.require(None):
            return
        self.render_h5("me.html", avatar=avatar_path(self.binding))


default_handlers = [
    (r"/h5/?", HomeHandler),
    (r"/h5/bind/(employee|visitor)", BindHandler),
    (r"/h5/(apply|invite)", ApplyHandler),
    (r"/h5/records", RecordsHandler),
    (r"/h5/records/([0-9]+)", RecordHandler),
    (r"/h5/approvals", ApprovalsHandler),
    (r"/h5/me", MeHandler),
]
