"""The notification events (CONTRACT §6) and the values a message template may show."""

EVENTS = (
    "approval_reminder_to_employee",
    "approval_pass_to_visitor",
    "signin_to_visitor",
    "visitor_signin_to_employee",
)

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
)

CHANNELS = ("wechat", "sms")

# Template id setting names, e.g. "signin_to_visitor_sms_id".
TEMPLATE_ID_FIELDS = tuple(f"{event}_{channel}_id" for event in EVENTS for channel in CHANNELS)
