"""Delivering the outbox: WeChat template messages and SMS, each exactly once, eventually (CONTRACT §6).

An entry is claimed with a lease (`status` "sending", `due_at` = the lease's end) by one atomic
update, so two processes never send the same one, and an entry whose sender died becomes due
again when its lease ends. Temporary failures are retried with exponential backoff; permanent
ones are marked failed with the reason."""
from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Callable
from zoneinfo import ZoneInfo

from .privacy import mask_phone
from .security import new_token
from .sms import SmsError, SmsSender
from .storage import ReturnDocument, Storage
from .system_settings import SystemSettings
from .visits import PURPOSES
from .wechat import WeChatApi, WeChatSendError

log = logging.getLogger(__name__)

# WeChat errcodes that retrying cannot fix: not subscribed, refused messages, bad openid,
# bad template, bad arguments.
PERMANENT_WECHAT = {43004, 43101, 40003, 40036, 40037, 47001, 47003, 41028, 41029}
FIELD_LIMIT = 20  # characters WeChat keeps of each template field
MAX_ATTEMPTS = 12

STATUS_TEXT = {
    "approval_reminder_to_employee": "待审批",
    "approval_pass_to_visitor": "已授权",
    "signin_to_visitor": "已签到",
    "visitor_signin_to_employee": "访客已签到",
}
# WeChat template fields when the admin has set no mapping: the classic keyword1…keyword4.
DEFAULT_FIELDS = {
    "approval_reminder_to_employee": ("visitor_name", "visitor_phone", "start_time", "purpose"),
    "approval_pass_to_visitor": ("visitor_name", "interviewee", "start_time", "status"),
    "signin_to_visitor": ("visitor_name", "interviewee", "start_time", "status"),
    "visitor_signin_to_employee": ("visitor_name", "visitor_phone", "start_time", "come_from"),
}
# The H5 page each message opens.
PAGES = {
    "approval_reminder_to_employee": "/h5/approvals",
    "approval_pass_to_visitor": "/h5/records/{id}",
    "signin_to_visitor": "/h5/records/{id}",
    "visitor_signin_to_employee": "/h5/records/{id}",
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
        "status": STATUS_TEXT[event],
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
    return params


class DeliveryWorker:
    """Claims due outbox entries and sends them; several may run in several processes."""

    def __init__(self, storage: Storage, settings: SystemSettings, wechat: WeChatApi, sms: SmsSender,
                 clock: Callable[[], float], tz: ZoneInfo, *, lease: float = 60.0, retry_base: float = 5.0,
                 poll: float = 1.0):
        self.storage = storage
        self.settings = settings
        self.wechat = wechat
        self.sms = sms
        self.clock = clock
        self.tz = tz
        self.lease = lease
        self.retry_base = retry_base
        self.poll = poll
        self.owner = new_token(9)
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """New entries were written: look now instead of at the next poll."""
        self._wakeup.set()

    async def claim(self) -> dict | None:
        """Take one due entry for this worker (a new one, or one whose sender's lease ran out), or None."""
        now = self.clock()
        for status in ("pending", "sending"):
            entry = await self.storage.outbox.find_one_and_update(
                {"status": status, "due_at": {"$lte": now}},
                {"$set": {"status": "sending", "due_at": now + self.lease, "lease_owner": self.owner},
                 "$inc": {"attempts": 1}},
                sort=[("due_at", 1)], return_document=ReturnDocument.AFTER,
            )
            if entry is not None:
                return entry
        return None

    async def run_once(self) -> int:
        """Deliver everything due now; returns how many entries were handled."""
        handled = 0
        while (entry := await self.claim()) is not None:
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
        """Send one claimed entry and record the outcome."""
        try:
            outcome = await self._send(entry)
        except Permanent as exc:
            await self._finish(entry, {"status": "failed", "last_error": str(exc)})
            log.warning("notification %s failed for good: %s", entry["_id"], exc)
            return
        except Temporary as exc:
            if entry["attempts"] >= MAX_ATTEMPTS:
                await self._finish(entry, {"status": "failed", "last_error": f"重试 {MAX_ATTEMPTS} 次仍失败：{exc}"})
                return
            delay = min(self.retry_base * 2 ** (entry["attempts"] - 1), 3600)
            await self._finish(entry, {"status": "pending", "due_at": self.clock() + delay, "last_error": str(exc)})
            log.info("notification %s will be retried in %.0fs: %s", entry["_id"], delay, exc)
            return
        await self._finish(entry, {"status": outcome, "sent_at": self.clock(), "last_error": ""})

    async def _finish(self, entry: dict, fields: dict) -> None:
        # Only the lease holder records the outcome.
        await self.storage.outbox.update_one({"_id": entry["_id"], "lease_owner": self.owner}, {"$set": fields})

    async def _send(self, entry: dict) -> str:
        record = await self.storage.records.find_one({"_id": entry["record_id"]})
        if record is None:
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
