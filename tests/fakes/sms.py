"""Fake Aliyun SMS (Dysmsapi 2017-05-25), action SendSms only."""
# Findings from running alibabacloud-dysmsapi20170525 4.6.0 (tea-openapi 0.4.6) against this fake,
# with Config(endpoint="127.0.0.1:<port>", protocol="http"):
# - send_sms / send_sms_async send `POST /` with an EMPTY body; every parameter (PhoneNumbers,
#   SignName, TemplateCode, TemplateParam) travels in the query string. The action and version are
#   headers `x-acs-action: SendSms`, `x-acs-version: 2017-05-25`; `Authorization: ACS3-HMAC-SHA256
#   Credential=<access key id>,SignedHeaders=…,Signature=…`. With Config(signature_algorithm="v2")
#   it sends the old RPC style instead: Action, Version, AccessKeyId, Signature… in the query.
# - A business error is HTTP 200 with `Code` != "OK": the SDK raises NOTHING; read
#   `resp.body.code` / `resp.body.message` / `resp.body.request_id` (resp.status_code is 200).
# - HTTP >= 400 raises alibabacloud_tea_openapi.exceptions.ClientException (4xx) or ServerException
#   (5xx), both AlibabaCloudException: `.code` is Aliyun's Code (e.g. "InternalError",
#   "InvalidAccessKeyId.NotFound"), `.status_code` the HTTP status, `.data` the body.
# - A timeout or refused connection raises darabonba.exceptions.UnretryableException, whose
#   `.inner_exception` is the transport error. All of these derive from Tea.exceptions.TeaException.
# - No automatic retries by default (one request per call, even on 500).
from __future__ import annotations

import json
import re
import secrets
import uuid

from .base import FakeHandler, FakeServer, serve_forever

MAINLAND_MOBILE = re.compile(r"^(\+?86|0086)?1[3-9]\d{9}$")


class RpcHandler(FakeHandler):
    """The single RPC endpoint `/`: the action comes in a header (ACS3) or a parameter (old RPC)."""

    def params(self) -> dict:
        """Query and form parameters together (the SDK sends them in the query string)."""
        params = {k: v[-1].decode("utf-8", "replace") for k, v in self.request.query_arguments.items()}
        params.update({k: v[-1].decode("utf-8", "replace") for k, v in self.request.body_arguments.items()})
        return params

    def aliyun(self, code: str, message: str, status: int = 200, **extra) -> None:
        self.reply({"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message, **extra}, status)

    def handle(self):
        fake: FakeSms = self.fake
        params = self.params()
        auth = re.search(r"Credential=([^,\s]+)", self.request.headers.get("Authorization", ""))
        key_id = auth.group(1) if auth else params.get("AccessKeyId")
        action = self.request.headers.get("x-acs-action") or params.get("Action")
        version = self.request.headers.get("x-acs-version") or params.get("Version")
        if not key_id:
            return self.aliyun("MissingAccessKeyId", "AccessKeyId is mandatory for this action.", 400)
        if key_id != fake.access_key_id:
            return self.aliyun("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if action != "SendSms":
            return self.aliyun("InvalidAction.NotFound", "Specified api is not found, please check your url and method.", 404)
        if version != "2017-05-25":
            return self.aliyun("InvalidVersion", "Specified parameter Version is not valid.", 400)
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                return self.aliyun(f"Missing{name}", f"{name} is mandatory for this action.", 400)
        if fake._business_failures:
            code, message = fake._business_failures.pop(0)
            return self.aliyun(code, message)
        phones = [p.strip() for p in params["PhoneNumbers"].split(",")]
        if not all(MAINLAND_MOBILE.match(p) for p in phones):
            return self.aliyun("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        try:
            template_params = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            template_params = None
        if not isinstance(template_params, dict):
            return self.aliyun("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        for phone in phones:
            fake.sent.append({"phone": phone, "sign_name": params["SignName"],
                              "template_code": params["TemplateCode"], "params": template_params})
        self.aliyun("OK", "OK", BizId=f"{secrets.randbelow(10**18):018d}^0")

    get = post = handle


class FakeSms(FakeServer):
    """Aliyun's SMS API answering SendSms for one access key."""

    name = "sms"
    default_port = 9003

    def __init__(self, access_key_id: str = "fake-key-id"):
        super().__init__()
        self.access_key_id = access_key_id
        self.sent: list[dict] = []
        self._business_failures: list[tuple[str, str]] = []

    def routes(self):
        return [(r"/", RpcHandler)]

    def error_body(self, status, message):
        return {"RequestId": str(uuid.uuid4()).upper(), "Code": "InternalError" if status >= 500 else "Forbidden",
                "Message": "The request processing has failed due to some unknown error, exception or failure."}

    def fail_next_with(self, code: str, message: str, times: int = 1) -> None:
        """The next `times` SendSms calls answer HTTP 200 with this Aliyun `Code` (nothing is sent)."""
        self._business_failures.extend([(code, message)] * times)

    def reset(self) -> None:
        """Forget requests, sent messages and injected failures."""
        super().reset()
        self.sent.clear()
        self._business_failures.clear()


if __name__ == "__main__":
    serve_forever(FakeSms())
