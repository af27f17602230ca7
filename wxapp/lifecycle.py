"""The course of a visit (CONTRACT §9): its statuses and every allowed transition, in one place.

A transition is applied by `Visits.transition` as one conditional update of the record (its status
must still be one of the transition's sources), carrying the notifications it causes
(`pending_events`, the outbox rule of §6) and, for those that end a pass, the revocation of the
record's QR codes (wxapp.revocation)."""
from __future__ import annotations

import dataclasses

from .gate import EXPIRED as GATE_EXPIRED
from .gate import NO_PERMISSION

PENDING = "pending"
APPROVED = "approved"
DECLINED = "declined"
CANCELLED = "cancelled"
SIGNED_IN = "signed_in"
CHECKED_OUT = "checked_out"
NO_SHOW = "no_show"
EXPIRED = "expired"

STATUSES = (PENDING, APPROVED, DECLINED, CANCELLED, SIGNED_IN, CHECKED_OUT, NO_SHOW, EXPIRED)
LABELS = {
    PENDING: "待审批",
    APPROVED: "已授权",
    DECLINED: "已拒绝",
    CANCELLED: "已取消",
    SIGNED_IN: "已签到",
    CHECKED_OUT: "已签退",
    NO_SHOW: "未到访",
    EXPIRED: "已过期",
}
# Statuses a visit can still move on from; the others are final.
OPEN = (PENDING, APPROVED, SIGNED_IN)
# Who called a cancelled visit off (`cancelled_by`), as admins read it.
CANCELLED_BY_LABELS = {"visitor": "访客", "employee": "被访员工", "admin": "管理员"}


@dataclasses.dataclass(frozen=True)
class Transition:
    """A move from one of `sources` to `target`; `gate_code` is what gates answer for the record's
    QR codes afterwards, when the transition ends its passes."""

    name: str
    label: str  # what the move is called, for "该预约已签到，无法取消"
    sources: frozenset[str]
    target: str
    gate_code: int | None = None


APPROVE = Transition("approve", "审批", frozenset({PENDING}), APPROVED)
DECLINE = Transition("decline", "拒绝", frozenset({PENDING, APPROVED}), DECLINED, NO_PERMISSION)
CANCEL = Transition("cancel", "取消", frozenset({PENDING, APPROVED}), CANCELLED, NO_PERMISSION)
SIGN_IN = Transition("sign_in", "签到", frozenset({APPROVED}), SIGNED_IN)
CHECK_OUT = Transition("check_out", "签退", frozenset({SIGNED_IN}), CHECKED_OUT, GATE_EXPIRED)
# At the end of the visit window (the background job).
END_NO_SHOW = Transition("no_show", "标记未到访", frozenset({APPROVED}), NO_SHOW)
END_EXPIRE = Transition("expire", "标记过期", frozenset({PENDING}), EXPIRED)
# What the end of the window does to each open status.
AT_END = {SIGNED_IN: CHECK_OUT, APPROVED: END_NO_SHOW, PENDING: END_EXPIRE}


def status_of(record: dict) -> str:
    """A record's status; records written before statuses existed get theirs from the seed's fields."""
    status = record.get("status")
    if status:
        return status
    if record.get("signin_time"):
        return SIGNED_IN
    return APPROVED if record.get("is_auth") else PENDING


def effective(record: dict, now: float) -> str:
    """A record's status as people should see it now: an open visit whose window is over has reached
    its end even before the background job has written it."""
    status = status_of(record)
    if status in AT_END and record["end_time"] <= now:
        return AT_END[status].target
    return status


def refusal(transition: Transition, current: str) -> str:
    """The 409 message for a transition not allowed from `current`, naming it in Chinese."""
    return f"该预约{LABELS[current]}，无法{transition.label}"


def parse_statuses(text: str) -> tuple[str, ...]:
    """A status filter: one status or several joined by commas; ValueError for an unknown one."""
    values = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [v for v in values if v not in STATUSES]
    if unknown or not values:
        raise ValueError(f"取值无效，可选：{', '.join(STATUSES)}")
    return values
