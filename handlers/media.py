"""Images anyone may load (the token or name is the secret): QR passes and stored avatars."""
from __future__ import annotations

import asyncio

from wxapp import gate
from wxapp.errors import ApiError
from wxapp.qrcodes import qr_content, qr_png

from .base import PlainTextHandler


class ImageHandler(PlainTextHandler):
    """Serves bytes with a content type; unknown names are a plain 404. A QR pass opens the gate and
    a photo is a person's face: neither is kept by any cache (the default Cache-Control: no-store)."""

    def send_image(self, data: bytes, content_type: str) -> None:
        self.set_header("Content-Type", content_type)
        self.finish(data)


class QrCodeHandler(ImageHandler):
    """GET /qrcode/<token>.png: the pass of one person of a signed-in visit."""

    async def get(self, token: str):
        entry = self.ctx.revocations.check(token, await self.ctx.gate_cache.lookup(token))
        if not gate.is_pass(entry):
            raise ApiError(404, "二维码不存在或已失效")
        png = await asyncio.get_running_loop().run_in_executor(
            self.ctx.executor, qr_png, qr_content(entry["r"], token))
        self.send_image(png, "image/png")


class AvatarHandler(ImageHandler):
    """GET /avatar/<name>: an employee avatar copied out of Koala, or a visitor's photo."""

    async def get(self, name: str):
        image = await self.ctx.images.get(name)
        if image is None:
            raise ApiError(404, "图片不存在")
        self.send_image(image[0], image[1])


default_handlers = [
    (r"/qrcode/(?P<token>[A-Za-z0-9_-]{16,64})\.png", QrCodeHandler),
    (r"/avatar/(?P<name>[A-Za-z0-9_-]{8,64}(?:\.(?:jpg|png))?)", AvatarHandler),
]
