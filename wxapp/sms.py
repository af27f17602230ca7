"""Sending SMS: Aliyun's official SDK, the log (development) or nothing (CONTRACT §8)."""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Executor

from .config import Config
from .privacy import mask_phone

log = logging.getLogger(__name__)


class SmsError(Exception):
    """An SMS could not be sent; `permanent` when retrying cannot help (bad number, bad template)."""

    def __init__(self, message: str, *, code: str = "", permanent: bool = False):
        super().__init__(message)
        self.code = code
        self.permanent = permanent


# Aliyun answers these when the request itself is wrong: retrying will not help.
_PERMANENT_CODES = {
    "isv.MOBILE_NUMBER_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL",
    "isv.INVALID_JSON_PARAM", "isv.TEMPLATE_MISSING_PARAMETERS", "isv.PARAM_LENGTH_LIMIT",
    "isv.MOBILE_COUNT_OVER_LIMIT", "isv.DENY_IP_RANGE", "isv.BLACK_KEY_CONTROL_LIMIT",
}


class SmsSender:
    """Sends one templated SMS; the backend is chosen by SMS_BACKEND."""

    def __init__(self, config: Config, executor: Executor):
        self.config = config
        self.executor = executor
        self._client = None

    @property
    def enabled(self) -> bool:
        """False when SMS_BACKEND=off: no SMS, and bindings ask for no code."""
        return self.config.sms_backend != "off"

    async def send(self, phone: str, template_code: str, params: dict) -> None:
        """Send (or log) the message; raise SmsError when the service refuses or fails."""
        backend = self.config.sms_backend
        if backend == "off":
            return
        if backend == "log":
            log.info("SMS to %s template %s: %s", mask_phone(phone), template_code or "-",
                     json.dumps(params, ensure_ascii=False))
            return
        if not template_code:
            raise SmsError("no SMS template configured", permanent=True)
        await asyncio.get_running_loop().run_in_executor(self.executor, self._send_aliyun, phone, template_code, params)

    def _aliyun(self):
        if self._client is None:
            from alibabacloud_dysmsapi20170525.client import Client
            from alibabacloud_tea_openapi import models as open_api_models

            endpoint = self.config.aliyun_sms_endpoint
            protocol = "https"
            if "://" in endpoint:
                protocol, _, endpoint = endpoint.partition("://")
            self._client = Client(open_api_models.Config(
                access_key_id=self.config.aliyun_access_key_id,
                access_key_secret=self.config.aliyun_access_key_secret,
                endpoint=endpoint.rstrip("/"), protocol=protocol,
                connect_timeout=int(self.config.http_timeout * 1000),
                read_timeout=int(self.config.http_timeout * 1000),
            ))
        return self._client

    def _send_aliyun(self, phone: str, template_code: str, params: dict) -> None:
        from alibabacloud_dysmsapi20170525 import models
        from Tea.exceptions import TeaException

        request = models.SendSmsRequest(
            phone_numbers=phone, sign_name=self.config.sms_sign_name, template_code=template_code,
            template_param=json.dumps(params, ensure_ascii=False),
        )
        try:
            response = self._aliyun().send_sms(request)
        except TeaException as exc:
            code = getattr(exc, "code", "") or ""
            raise SmsError(f"Aliyun SMS failed: {code} {getattr(exc, 'message', '')}".strip(), code=code,
                           permanent=code in _PERMANENT_CODES) from exc
        except Exception as exc:  # the SDK wraps network errors in its own types
            raise SmsError(f"Aliyun SMS unreachable: {type(exc).__name__}") from exc
        body = response.body
        if body.code != "OK":
            raise SmsError(f"Aliyun SMS refused: {body.code} {body.message}", code=body.code,
                           permanent=body.code in _PERMANENT_CODES)
