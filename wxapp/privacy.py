"""What pages and logs may show of personal data and secrets: masked phones, scrubbed URLs."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

# Query parameters whose values are secrets or one-time credentials: OAuth codes and states, the
# /wechat signature triple and echo, keys, tokens, passwords. Logs keep their names, never their values.
SECRET_PARAMS = frozenset({
    "code", "state", "signature", "msg_signature", "timestamp", "nonce", "echostr", "key", "api_key",
    "access_token", "refresh_token", "token", "secret", "appsecret", "password", "_xsrf",
})
# Query parameters that carry a phone number, whatever it looks like.
PHONE_PARAMS = frozenset({"phone", "proposer", "interviewee_phone", "mobile"})
_MOBILE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")
_SECRET_IN_TEXT = re.compile(r"([?&;](?:%s)=)[^&#\s'\"]*" % "|".join(sorted(SECRET_PARAMS)), re.IGNORECASE)
# A QR pass's token is the pass itself: its image path is logged without it.
_QR_PATH = re.compile(r"^/qrcode/[^/?]+\.png")


def mask_phone(phone: str) -> str:
    """138****0001: enough to recognise a number in a list or a log without showing it."""
    if len(phone) >= 8:
        return phone[:3] + "****" + phone[-4:]
    return "*" * max(0, len(phone) - 2) + phone[-2:]


def mask_mobiles(text: str) -> str:
    """`text` with every mainland mobile number in it masked."""
    return _MOBILE.sub(lambda m: mask_phone(re.sub(r"[ -]", "", m.group(0))), text)


def scrub_secrets(text: str) -> str:
    """`text` (an error message quoting a URL, say) without the values of secret query parameters."""
    return _SECRET_IN_TEXT.sub(r"\1*", text)


def loggable_uri(uri: str) -> str:
    """A request's path and query as the access log may keep them: secret parameters without their
    values, phones masked, QR tokens left out."""
    path, sep, query = uri.partition("?")
    path = mask_mobiles(_QR_PATH.sub("/qrcode/*.png", path))
    if not sep:
        return path
    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        lowered = name.lower()
        if lowered in SECRET_PARAMS:
            value = "*"
        elif lowered in PHONE_PARAMS:
            value = mask_phone(re.sub(r"[ -]", "", value))
        else:
            value = mask_mobiles(value)
        parts.append(quote(name, safe="[]._") + "=" + quote(value, safe="*+,/:@"))
    return path + "?" + "&".join(parts)
