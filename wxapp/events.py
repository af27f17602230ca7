"""The notification events (CONTRACT §6) and the values a message template may show."""

SEED_EVENTS = (
    "approval_reminder_to_employee",
    "approval_pass_to_visitor",
    "signin_to_visitor",
    "visitor_signin_to_employee",
)
# The course of a visit beyond the seed (CONTRACT §9): their template ids are optional in a PUT.
LIFECYCLE_EVENTS = (
    "decline_to_visitor",
    "cancel_to_employee",
    "cancel_to_visitor",
    "visit_reminder_to_visitor",
)
EVENTS = SEED_EVENTS + LIFECYCLE_EVENTS

# Named values each event offers to a WeChat template's fields.
TEMPLATE_VALUES = (
    "visitor_name",
    "visitor_phone",
    "come_from",
    "start_time",
    "end_time",
    "interviewee",
    "purpose",
    "status",
    "reason",
)

# What people call each event (the admin pages).
EVENT_LABELS = {
    "approval_reminder_to_employee": "审批提醒（员工）",
    "approval_pass_to_visitor": "审批通过（访客）",
    "signin_to_visitor": "签到成功（访客）",
    "visitor_signin_to_employee": "访客已签到（员工）",
    "decline_to_visitor": "来访被拒绝（访客）",
    "cancel_to_employee": "访客取消预约（员工）",
    "cancel_to_visitor": "预约被取消（访客）",
    "visit_reminder_to_visitor": "来访当天提醒（访客）",
}
assert set(EVENT_LABELS) == set(EVENTS)

CHANNELS = ("wechat", "sms")
CHANNEL_LABELS = {"wechat": "微信模板消息", "sms": "短信"}
assert set(CHANNEL_LABELS) == set(CHANNELS)

# Template id setting names, e.g. "signin_to_visitor_sms_id".
TEMPLATE_ID_FIELDS = tuple(f"{event}_{channel}_id" for event in EVENTS for channel in CHANNELS)
SEED_TEMPLATE_ID_FIELDS = tuple(f"{event}_{channel}_id" for event in SEED_EVENTS for channel in CHANNELS)
