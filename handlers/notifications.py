"""The outbox for admins: list notifications with their status and last error, retry a failed one."""
from __future__ import annotations

from wxapp.auth import Role
from wxapp.validation import Field, Schema
from wxapp.outbox import STATUSES

from .base import APIHandler, api
from .visits import PAGE, SIZE

NOTIFICATION_SCHEMA = {"type": "object", "properties": {k: {"type": t} for k, t in (
    ("id", "string"), ("event", "string"), ("channel", "string"), ("to", "string"), ("record_id", "integer"),
    ("status", "string"), ("attempts", "integer"), ("last_error", "string"), ("created_at", "integer"),
    ("sent_at", "integer"))}}


def present(entry: dict) -> dict:
    """An outbox entry as admins see it."""
    return {
        "id": entry["_id"], "event": entry["event"], "channel": entry["channel"], "to": entry["to"],
        "record_id": entry["record_id"], "status": entry["status"], "attempts": entry.get("attempts", 0),
        "last_error": entry.get("last_error", ""), "created_at": int(entry["created_at"]),
        "sent_at": int(entry.get("sent_at") or 0),
    }


class NotificationsHandler(APIHandler):
    """GET /v1/notifications: newest first, optionally by status."""

    @api(allow=[Role.ADMIN], summary="通知发送记录（微信模板消息和短信）",
         query=Schema(Field("status", required=False, choices=STATUSES, description="发送状态"), PAGE, SIZE),
         data={"type": "array", "items": NOTIFICATION_SCHEMA}, paged=True)
    async def get(self):
        entries, page = await self.ctx.outbox.list(self.query.get("status"), self.query["page"], self.query["size"])
        self.ok([present(e) for e in entries], page)


class RetryHandler(APIHandler):
    """POST /v1/notifications/{id}/retry: send a failed or skipped notification again."""

    @api(allow=[Role.ADMIN], summary="重新发送一条失败的通知",
         path=Schema(Field("id", max_length=128, description="通知 id，形如 事件:记录id:渠道")),
         data=NOTIFICATION_SCHEMA, errors=(404, 409))
    async def post(self, id: str):
        entry = await self.ctx.outbox.retry(id)
        self.ok(present(entry))


default_handlers = [
    (r"/v1/notifications", NotificationsHandler),
    (r"/v1/notifications/(?P<id>[^/]+)/retry", RetryHandler),
]
