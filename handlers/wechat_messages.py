"""GET/POST /wechat: the Official Account's message endpoint (CONTRACT §7), with wechatpy."""
from __future__ import annotations

import logging
from xml.parsers.expat import ExpatError

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import EmptyReply, TextReply

from wxapp.errors import ApiError
from wxapp.official_account import reply_text

from .base import PlainTextHandler

log = logging.getLogger(__name__)


class WeChatMessageHandler(PlainTextHandler):
    """WeChat's servers call this: the signature is checked before anything else."""

    def check_xsrf_cookie(self):
        # WeChat signs its requests; there is no browser and no cookie here.
        pass

    async def prepare(self):
        args = [self.get_query_argument(name, "") for name in ("signature", "timestamp", "nonce")]
        try:
            await self.ctx.wechat_signatures.verify(*args)
        except ApiError as exc:
            log.warning("refused a /wechat request from %s: %s", self.request.remote_ip, exc.message)
            raise

    def get(self):
        # WeChat reads the echo as text; as HTML a crafted echostr would be markup on our origin.
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(self.get_query_argument("echostr", ""))

    async def post(self):
        config = self.ctx.config
        timestamp, nonce = self.get_query_argument("timestamp"), self.get_query_argument("nonce")
        crypto = None
        xml = self.request.body
        try:
            if config.wechat_encoding_aes_key:
                crypto = WeChatCrypto(config.wechat_token, config.wechat_encoding_aes_key, config.wechat_app_id)
                xml = crypto.decrypt_message(xml, self.get_query_argument("msg_signature", ""), timestamp, nonce)
            message = parse_message(xml)
            if message is None:
                raise ValueError("empty message")
        except (InvalidSignatureException, InvalidAppIdException):
            raise ApiError(403, "消息签名无效") from None
        except (ExpatError, ValueError, KeyError, TypeError, AttributeError):
            raise ApiError(400, "消息格式错误") from None
        text = reply_text(message, await self.public_url(""))
        reply = TextReply(message=message, content=text) if text else EmptyReply()
        body = reply.render()
        if crypto is not None and text:
            body = crypto.encrypt_message(body, nonce, timestamp)
        self.set_header("Content-Type", "application/xml; charset=UTF-8")
        self.finish(body)


default_handlers = [(r"/wechat", WeChatMessageHandler)]
