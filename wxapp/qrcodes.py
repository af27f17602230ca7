"""QR code images (PNG) for visitors' passes."""
from __future__ import annotations

import io
import json

import qrcode
from qrcode.constants import ERROR_CORRECT_M


def qr_content(record_id: int, token: str) -> str:
    """What a person's QR code holds (CONTRACT §5)."""
    return json.dumps({"id": record_id, "qrcode": token})


def qr_png(content: str, box_size: int = 10) -> bytes:
    """A PNG of `content` with a quiet zone, large enough to scan from a phone screen (blocking)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=4)
    code.add_data(content)
    code.make(fit=True)
    buf = io.BytesIO()
    code.make_image(fill_color="black", back_color="white").save(buf, format="PNG")
    return buf.getvalue()
