"""Delivering the outbox: WeChat template messages and SMS, none lost, none sent twice but for a
send under way when its process died or one WeChat or Aliyun never answered (CONTRACT §6).

An entry is claimed with a lease (`status` "sending", `due_at` = the lease's end) by one atomic
update, so two processes never send the same one. The sender renews the lease while the send
lasts, however slow WeChat or Aliyun answers; an entry whose sender died becomes due again when
its lease ends, and is sent again: neither WeChat nor Aliyun takes an idempotency key, so a send
that was under way at the crash may arrive twice, as may one retried after a timeout. Each channel
has one lane per process (one send in flight per channel), so a slow WeChat does not hold up SMS.
A process remembers what it sent, so it never sends an entry twice itself, even when the write of
the outcome is lost. Temporary failures are retried with exponential backoff; permanent ones are
marked failed with the reason."""
from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from typing import Callable
from zoneinfo import ZoneInfo

from .errors import ApiError
from .events import CHANNELS
from .outbox import Outbox
from .privacy import mask_phone
from .security import new_token
from .sms import SmsError, SmsSender
from .system_settings import SystemSettings
from .visits import PURPOSES, Visits
from .wechat import WeChatApi, WeChatSendError

log = logging.getLogger(__name__)

# WeChat errcodes that retrying cannot fix: not subscribed, refused messages, bad openid,
# bad template, bad arguments.
PERMANENT_WECHAT = {43004, 43101, 40003, 40036, 40037, 47001, 47003, 41028, 41029}
FIELD_LIMIT = 20  # characters WeChat keeps of each template field
MAX_ATTEMPTS = 12
REMEMBER_SENT = 10_000  # ids of sent entries a process keeps, to never send one twice itself

STATUS_TEXT = {
    "approval_reminder_to_employee": "待审批",
    "approval_pass_to_visitor": "已授权",
    "signin_to_visitor": "已签到",
    "visitor_signin_to_employee": "访客已签到",
    "decline_to_visitor": "已拒绝",
    "cancel_to_employee": "访客已取消",
    "cancel_to_visitor": "已取消",
    "visit_reminder_to_visitor": "今日来访",
}
# WeChat template fields when the admin has set no mapping: the classic keyword1…keyword4.
DEFAULT_FIELDS = {
    "approval_reminder_to_employee": ("visitor_name", "visitor_phone", "start_time", "purpose"),
    "approval_pass_to_visitor": ("visitor_name", "interviewee", "start_time", "status"),
    "signin_to_visitor": ("visitor_name", "interviewee", "start_time", "status"),
    "visitor_signin_to_employee": ("visitor_name", "visitor_phone", "start_time", "come_from"),
    "decline_to_visitor": ("visitor_name", "interviewee", "start_time", "reason"),
    "cancel_to_employee": ("visitor_name", "visitor_phone", "start_time", "status"),
    "cancel_to_visitor": ("visitor_name", "interviewee", "start_time", "status"),
    "visit_reminder_to_visitor": ("visitor_name", "interviewee", "start_time", "end_time"),
}
# The H5 page each message opens.
PAGES = {
    "approval_reminder_to_employee": "/h5/approvals",
    "approval_pass_to_visitor": "/h5/records/{id}",
    "signin_to_visitor": "/h5/records/{id}",
    "visitor_signin_to_employee": "/h5/records/{id}",
    "decline_to_visitor": "/h5/records/{id}",
    "cancel_to_employee": "/h5/records/{id}",
    "cancel_to_visitor": "/h5/records/{id}",
    "visit_reminder_to_visitor": "/h5/records/{id}",
}


class Permanent(Exception):
    """Sending failed in a way retrying cannot fix."""


class Temporary(Exception):
    """Sending failed for now; try again later."""


def template_values(event: str, record: dict, tz: ZoneInfo) -> dict[str, str]:
    """The named values an event offers to message templates."""
    def fmt(ts: int) -> str:
        return datetime.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")

    return {
        "visitor_name": record["name"], "visitor_phone": record["phone"], "come_from": record.get("come_from", ""),
        "start_time": fmt(record["start_time"]), "end_time": fmt(record["end_time"]),
        "interviewee": record["interviewee"], "purpose": PURPOSES.get(record.get("purpose", 0), "其它"),
        "status": STATUS_TEXT[event], "reason": record.get("decline_reason", ""),
    }


def wechat_data(event: str, values: dict, mapping: dict | None) -> dict:
    """Template data: the admin's field mapping (or keyword1…4), each value cut to WeChat's limit."""
    mapping = mapping or {f"keyword{i}": name for i, name in enumerate(DEFAULT_FIELDS[event], 1)}
    return {key: {"value": values[name][:FIELD_LIMIT]} for key, name in mapping.items()}


def sms_params(event: str, values: dict, url: str) -> dict:
    """SMS TemplateParam: name and time, plus the pass link for the visitor's sign-in message."""
    params = {"name": values["visitor_name"][:FIELD_LIMIT], "time": values["start_time"]}
    if event == "signin_to_visitor":
        params["url"] = url
    if event == "decline_to_visitor":
        params["reason"] = values["reason"][:FIELD_LIMIT] or "无"
    return params


class DeliveryWorker:
    """Claims due outbox entries and sends them; several may run in several processes."""

    def __init__(self, outbox: Outbox, visits: Visits, settings: SystemSettings, wechat: WeChatApi,
                 sms: SmsSender, clock: Callable[[], float], tz: ZoneInfo, *, lease: float = 15.0,
                 retry_base: float = 5.0, poll: float = 1.0, wakeup: asyncio.Event | None = None):
        self.outbox = outbox
        self.visits = visits
        self.settings = settings
        self.wechat = wechat
        self.sms = sms
        self.clock = clock
        self.tz = tz
        self.lease = lease
        self.retry_base = retry_base
        self.poll = poll
        self.owner = new_token(9)
        # Set when new entries are written (by the outbox): look now instead of at the next poll.
        self._wakeup = wakeup if wakeup is not None else asyncio.Event()
        self._in_flight: set[str] = set()
        # Entries this process sent, with the outcome to write again should the first write be lost.
        self._sent: collections.OrderedDict[str, dict] = collections.OrderedDict()

    async def claim(self, channel: str | None = None) -> dict | None:
        """Take one due entry (of `channel`, or any) for this worker: a new one, or one whose sender's
        lease ran out; never one this process is sending. None when nothing is due."""
        return await self.outbox.claim(self.owner, self.lease, channel=channel, busy=self._in_flight)

    async def run_once(self) -> int:
        """Deliver everything due now, the channels side by side; returns how many entries were handled."""
        # Both lanes end before this returns, even when one fails, so a lane never outlives its round.
        results = await asyncio.gather(*(self._drain(channel) for channel in CHANNELS), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(results)

    async def _drain(self, channel: str) -> int:
        handled = 0
        while (entry := await self.claim(channel)) is not None:
            await self.deliver(entry)
            handled += 1
        return handled

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away: keep the loop alive
                log.exception("delivery round failed")
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.poll)
            except asyncio.TimeoutError:
                pass

    async def deliver(self, entry: dict) -> None:
        """Send one claimed entry and record the outcome, holding the lease until it is recorded."""
        entry_id = entry["_id"]
        if entry_id in self._sent:  # sent already, but the outcome never reached the database
            log.warning("notification %s was sent already: recording it, not sending again", entry_id)
            await self._finish(entry, self._sent[entry_id])
            return
        self._in_flight.add(entry_id)
        keeper = asyncio.create_task(self._keep_lease(entry_id))
        try:
            fields = await self._attempt(entry)
            if fields["status"] == "sent":
                self._sent[entry_id] = fields
                while len(self._sent) > REMEMBER_SENT:
                    self._sent.popitem(last=False)
            await self._finish(entry, fields)
        finally:
            keeper.cancel()
            self._in_flight.discard(entry_id)

    async def _attempt(self, entry: dict) -> dict:
        """Send an entry; the fields that record the outcome."""
        try:
            outcome = await self._send(entry)
        except Permanent as exc:
            log.warning("notification %s failed for good: %s", entry["_id"], exc)
            return {"status": "failed", "last_error": str(exc)}
        except Temporary as exc:
            if entry["attempts"] >= MAX_ATTEMPTS:
                return {"status": "failed", "last_error": f"重试 {MAX_ATTEMPTS} 次仍失败：{exc}"}
            delay = min(self.retry_base * 2 ** (entry["attempts"] - 1), 3600)
            log.info("notification %s will be retried in %.0fs: %s", entry["_id"], delay, exc)
            return {"status": "pending", "due_at": self.clock() + delay, "last_error": str(exc)}
        return {"status": outcome, "sent_at": self.clock(), "last_error": ""}

    async def _keep_lease(self, entry_id: str) -> None:
        """Push the lease's end forward while the send lasts, so no other process takes the entry."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.outbox.renew(entry_id, self.owner, self.lease)
            except Exception as exc:  # the database may be briefly away; the next renewal may pass
                log.warning("lease of notification %s not renewed: %s", entry_id, exc)

    async def _finish(self, entry: dict, fields: dict) -> None:
        # Only the lease holder records the outcome. A failed write is tried again a few times while
        # the lease is held; should it still fail, `_sent` keeps this process from sending again.
        for pause in (0.2, 1.0, 3.0, None):
            try:
                await self.outbox.record_outcome(entry["_id"], self.owner, fields)
                return
            except Exception:
                if pause is None:
                    raise
                log.warning("outcome of notification %s not recorded yet, trying again", entry["_id"])
                await asyncio.sleep(pause)

    async def _send(self, entry: dict) -> str:
        try:
            record = await self.visits.get(entry["record_id"])
        except ApiError:  # the record is gone, or being deleted
            return "cancelled"
        event, channel = entry["event"], entry["channel"]
        templates = await self.settings.templates()
        template_id = templates.get(f"{event}_{channel}_id", "")
        if not template_id and not (channel == "sms" and self.sms.config.sms_backend == "log"):
            return "skipped"  # the admin has set no template for this channel
        cloud_url = await self.settings.cloud_url()
        url = cloud_url + PAGES[event].format(id=record["_id"])
        values = template_values(event, record, self.tz)
        if channel == "wechat":
            data = wechat_data(event, values, templates.get("wechat_fields", {}).get(event))
            try:
                await self.wechat.send_template(entry["to"], template_id, data, url)
            except WeChatSendError as exc:
                error = f"微信 {exc}"
                raise (Permanent(error) if exc.errcode in PERMANENT_WECHAT else Temporary(error)) from None
        else:
            if not self.sms.enabled:
                return "skipped"
            try:
                await self.sms.send(entry["to"], template_id, sms_params(event, values, url))
            except SmsError as exc:
                error = f"短信 {mask_phone(entry['to'])} {exc}"
                raise (Permanent(error) if exc.permanent else Temporary(error)) from None
        return "sent"
