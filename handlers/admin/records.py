"""/admin/records: the seed's filters, paging, a record's detail, deletion and a CSV export."""
from __future__ import annotations

import asyncio
import csv
import io
import logging
from urllib.parse import parse_qsl, quote, urlencode

from wxapp import lifecycle
from wxapp.errors import ApiError
from wxapp.validation import normalize_phone
from wxapp.visits import PURPOSES
from wxapp.events import CHANNEL_LABELS, EVENT_LABELS
from wxapp.outbox import STATUS_LABELS as OUTBOX_STATUS_LABELS

from .base import AdminPageHandler, mask_phone

log = logging.getLogger(__name__)

PAGE_SIZE = 20
FILTERS = ("name", "phone", "interviewee", "interviewee_phone", "start", "end", "is_auth", "status")
REASON_MAX = 100
STATUS_STYLES = {"待审批": "warning", "已授权": "primary", "已签到": "success", "已签退": "secondary",
                 "已拒绝": "danger", "已取消": "secondary", "未到访": "secondary", "已过期": "secondary"}
CSV_COLUMNS = ["记录ID", "访客姓名", "访客手机", "随行人数", "随行人员", "访客单位", "来访目的", "被访人", "被访人手机",
               "部门", "开始时间", "结束时间", "状态", "签到时间", "申请时间", "备注"]


class RecordsPage(AdminPageHandler):
    """Shared by the list and the export: the filter form read into Visits.filters arguments."""

    nav = "/admin/records"

    def read_filters(self) -> tuple[dict, dict, dict]:
        """(the form as entered, the arguments for Visits.filters, errors by field)."""
        form = {name: self.get_query_argument(name, "").strip() for name in FILTERS}
        args: dict = {"name": form["name"][:32], "interviewee": form["interviewee"][:32]}
        errors: dict[str, str] = {}
        for name in ("phone", "interviewee_phone"):
            if form[name]:
                try:
                    args[name] = normalize_phone(form[name])
                except ValueError:
                    errors[name] = "请输入完整的手机号码（精确匹配）"
        days = {}
        for name, label in (("start", "开始日期"), ("end", "结束日期")):
            if form[name]:
                try:
                    days[name] = self.day_bounds(form[name], label)
                except ApiError as exc:
                    errors[name] = exc.message
        if "start" in days and "end" in days and days["start"] > days["end"]:
            errors["end"] = "结束日期不能早于开始日期"
        if "start" in days:  # visits that overlap the chosen days: from the first one's start
            args["start_time"] = days["start"][0]
        if "end" in days:  # to the last one's end
            args["end_time"] = days["end"][1]
        if form["is_auth"] in ("0", "1"):
            args["is_auth"] = int(form["is_auth"])
        if form["status"] in lifecycle.STATUSES:
            args["status"] = (form["status"],)
        return form, args, errors

    def filter_query(self, form: dict) -> str:
        """The filters as a query string (for the export link and the way back from a record)."""
        return urlencode({name: value for name, value in form.items() if value})


class RecordListHandler(RecordsPage):
    """The records list with the seed's filters."""

    async def get(self):
        form, args, errors = self.read_filters()
        page_number = self.page_number()
        records, page = [], None
        if not errors:
            query = self.ctx.visits.filters(args)
            records, page = await self.ctx.visits.find(query, page_number, PAGE_SIZE)
        self.render_admin(
            "admin/records.html", status=400 if errors else 200, form=form, errors=errors, records=records,
            page=page, status_of=self.ctx.visits.status, styles=STATUS_STYLES, filters=self.filter_query(form),
            statuses=[(status, lifecycle.LABELS[status]) for status in lifecycle.STATUSES],
            back=urlencode({**{k: v for k, v in form.items() if v}, **({"page": page_number} if page_number > 1 else {})}),
        )


EXPORT_BATCH = 100  # CSV rows formatted between two turns of the event loop


class RecordExportHandler(RecordsPage):
    """The filtered list as CSV for Excel: UTF-8 with a BOM, CRLF lines, phones masked, streamed."""

    async def get(self):
        form, args, errors = self.read_filters()
        if errors:
            raise ApiError(400, "；".join(errors.values()))
        today = self.today().strftime("%Y%m%d")
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f"attachment; filename=\"visit-records-{today}.csv\"; "
                                               f"filename*=UTF-8''{quote(f'访客记录-{today}.csv')}")
        self.set_header("Cache-Control", "no-store")
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # CRLF line ends, as Excel expects
        buffer.write("\ufeff")  # the BOM makes Excel read UTF-8 instead of the local code page
        writer.writerow(CSV_COLUMNS)
        rows = 0
        try:
            async for record in self.ctx.visits.each(self.ctx.visits.filters(args)):
                writer.writerow([_cell(value) for value in self.row(record)])
                rows += 1
                if rows % EXPORT_BATCH == 0:
                    # Hand the rows to the connection and let the event loop serve others (gates above
                    # all) before formatting more: a long export must never hold the loop.
                    self.write(buffer.getvalue())
                    buffer.seek(0)
                    buffer.truncate()
                    await self.flush()
                    await asyncio.sleep(0)
        except Exception:
            if rows >= EXPORT_BATCH:
                # Rows were sent already, under a 200: end the connection without the last chunk, so
                # the browser reports a failed download instead of saving a short file as complete.
                log.exception("the CSV export failed after %d rows; its download is broken off", rows)
                self.request.connection.close()
            raise
        self.finish(buffer.getvalue())

    def row(self, record: dict) -> list:
        retinues = record["retinues"]
        return [
            record["_id"], record["name"], mask_phone(record["phone"]), len(retinues),
            "、".join(p["name"] for p in retinues), record["come_from"], PURPOSES.get(record["purpose"], ""),
            record["interviewee"], mask_phone(record["interviewee_phone"]), record.get("department", ""),
            self.fmt_time(record["start_time"]), self.fmt_time(record["end_time"]), self.ctx.visits.status(record),
            self.fmt_time(record["signin_time"]), self.fmt_time(record.get("create_time")), record["remark"],
        ]


def _filters_only(query: str) -> str:
    """A list's query string passed along as `back`, re-encoded and limited to the filters."""
    return urlencode([(name, value) for name, value in parse_qsl(query) if name in FILTERS or name == "page"])


def _cell(value):
    """A value safe to open in Excel: text that would start a formula is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class RecordHandler(AdminPageHandler):
    """One record in full: its people with phones and QR codes, sign-in, gate passes, notifications."""

    nav = "/admin/records"

    async def get(self, record_id: str):
        record = await self.ctx.visits.get(int(record_id))
        state = lifecycle.effective(record, self.ctx.clock())
        people = [("访客本人", record)] + [(f"随行人员 {n}", p) for n, p in enumerate(record["retinues"], 1)]
        self.render_admin(
            "admin/record.html", record=record, people=people, visit_status=self.ctx.visits.status(record),
            styles=STATUS_STYLES, purposes=PURPOSES, passes=await self.ctx.pass_log.entries(record["_id"], limit=50),
            notifications=await self.ctx.outbox.for_record(record["_id"]),
            back=_filters_only(self.get_query_argument("back", "")), event_labels=EVENT_LABELS, channel_labels=CHANNEL_LABELS,
            status_labels=OUTBOX_STATUS_LABELS, undecided=state in lifecycle.DECLINE.sources, state=state,
            cancelled_by_labels=lifecycle.CANCELLED_BY_LABELS,
        )


class RecordDeleteHandler(AdminPageHandler):
    """GET asks for confirmation; POST deletes (QR codes stop at once, Koala subjects go too)."""

    nav = "/admin/records"

    async def get(self, record_id: str):
        record = await self.ctx.visits.get(int(record_id))
        self.render_admin("admin/record_delete.html", record=record, visit_status=self.ctx.visits.status(record),
                          back=_filters_only(self.get_query_argument("back", "")))

    async def post(self, record_id: str):
        await self.ctx.visits.delete(int(record_id))
        back = _filters_only(self.get_body_argument("back", ""))
        self.redirect("/admin/records?" + (back + "&" if back else "") + "done=deleted")


class RecordMoveHandler(AdminPageHandler):
    """拒绝来访 and 取消预约 (CONTRACT §9): GET asks for confirmation, POST makes the move and returns to
    the record; a move the visit's status no longer allows is shown on the confirmation page (409)."""

    nav = "/admin/records"
    MOVES = {"decline": ("拒绝来访", "declined"), "cancel": ("取消预约", "cancelled")}

    async def get(self, record_id: str, move: str):
        record = await self.ctx.visits.get(int(record_id))
        self.confirm(record, move, back=_filters_only(self.get_query_argument("back", "")))

    async def post(self, record_id: str, move: str):
        back = _filters_only(self.get_body_argument("back", ""))
        reason = self.get_body_argument("reason", "").strip()
        try:
            if move == "decline":
                if len(reason) > REASON_MAX:
                    raise ApiError(400, f"拒绝原因最多 {REASON_MAX} 个字")
                await self.ctx.visits.decline(int(record_id), None, reason)
            else:
                await self.ctx.visits.cancel(int(record_id), None)
        except ApiError as exc:
            if exc.status not in (400, 409):
                raise
            record = await self.ctx.visits.get(int(record_id))
            self.confirm(record, move, back=back, error=exc.message, reason=reason, status=exc.status)
            return
        query = urlencode({**({"back": back} if back else {}), "done": self.MOVES[move][1]})
        self.redirect(f"/admin/records/{int(record_id)}?{query}")

    def confirm(self, record: dict, move: str, *, back: str, error: str = "", reason: str = "",
                status: int = 200) -> None:
        self.render_admin("admin/record_move.html", status=status, record=record, move=move,
                          title=self.MOVES[move][0], visit_status=self.ctx.visits.status(record), styles=STATUS_STYLES,
                          back=back, error=error, reason=reason, reason_max=REASON_MAX)


default_handlers = [
    (r"/admin/records", RecordListHandler),
    (r"/admin/records\.csv", RecordExportHandler),
    (r"/admin/records/([0-9]{1,15})", RecordHandler),
    (r"/admin/records/([0-9]{1,15})/delete", RecordDeleteHandler),
    (r"/admin/records/([0-9]{1,15})/(decline|cancel)", RecordMoveHandler),
]
