"""What the Official Account says: replies to followers and the menu, all linking to the H5 pages."""
from __future__ import annotations

from urllib.parse import quote

from wechatpy.messages import TextMessage

PAGES = {
    "bind": ("绑定身份", "/h5/"),
    "apply": ("预约来访", "/h5/apply"),
    "records": ("我的记录", "/h5/records"),
    "approvals": ("审批访客", "/h5/approvals"),
}
KEYWORDS = {"预约": "apply", "申请": "apply", "记录": "records", "二维码": "records", "绑定": "bind",
            "审批": "approvals"}
CLICK_KEYS = {"BIND": "bind", "APPLY": "apply", "RECORDS": "records", "APPROVALS": "approvals"}


def page_link(cloud_url: str, page: str) -> str:
    """An H5 page behind the WeChat login, so it opens with the user's session."""
    return f"{cloud_url}/wechat/oauth?next={quote(PAGES[page][1], safe='/')}"


def _anchor(cloud_url: str, page: str) -> str:
    return f'<a href="{page_link(cloud_url, page)}">{PAGES[page][0]}</a>'


def welcome(cloud_url: str) -> str:
    """The reply to a new follower."""
    return ("欢迎关注！在这里可以预约来访、查看通行二维码。\n"
            f"第一次使用请先{_anchor(cloud_url, 'bind')}（访客绑定手机号，员工绑定工号信息）。\n"
            f"{_anchor(cloud_url, 'apply')} · {_anchor(cloud_url, 'records')}")


def help_text(cloud_url: str) -> str:
    """The reply to anything the account does not understand."""
    return ("您可以回复：预约、记录、绑定、审批。\n"
            f"{_anchor(cloud_url, 'apply')} · {_anchor(cloud_url, 'records')} · {_anchor(cloud_url, 'bind')}")


def reply_text(message, cloud_url: str) -> str | None:
    """The text to answer a message or event with; None for events that need no answer."""
    kind = getattr(message, "event", None)
    if kind == "subscribe" or kind == "subscribe_scan":
        return welcome(cloud_url)
    if kind == "click":
        page = CLICK_KEYS.get(getattr(message, "key", ""))
        return f"请点击：{_anchor(cloud_url, page)}" if page else help_text(cloud_url)
    if kind is not None:
        return None  # unsubscribe, view, location…: nothing to say
    if isinstance(message, TextMessage):
        for word, page in KEYWORDS.items():
            if word in message.content:
                return f"请点击：{_anchor(cloud_url, page)}"
    return help_text(cloud_url)


def menu(cloud_url: str) -> dict:
    """The Official Account menu."""
    def view(page: str) -> dict:
        return {"type": "view", "name": PAGES[page][0], "url": page_link(cloud_url, page)}

    return {"button": [
        view("apply"),
        view("records"),
        {"name": "更多", "sub_button": [view("approvals"), view("bind"),
                                        {"type": "click", "name": "使用帮助", "key": "HELP"}]},
    ]}
