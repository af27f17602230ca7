"""H5 API 3, 5, 6, 7 and admin API 3.1, 4.1, 4.2: applications, records, authorization,
sign-in, gate verification and deletion (CONTRACT §5)."""
from __future__ import annotations

import logging

from wxapp import gate, lifecycle
from wxapp.auth import Role
from wxapp.errors import ApiError
from wxapp.validation import (PAGE, PHONE_PATTERN, RECORD_ID, Field, Schema, name_field, normalize_phone, phone_field,
                              text_field, time_field)

from .base import DEFAULT_BODY_LIMIT, APIHandler, api

log = logging.getLogger(__name__)


def _optional_phone(value: str) -> str:
    return normalize_phone(value) if value else ""


def _filter_phone(name: str, description: str) -> Field:
    return Field(name, required=False, allow_empty=True, max_length=24, check=_optional_phone,
                 pattern=f"^(?:|{PHONE_PATTERN[1:-1]})$", pattern_message="不是有效的手机号码",
                 description=description)


SIZE = Field("size", "integer", default=5, minimum=1, check=lambda v: min(v, 100),
             description="每页条数；大于 100 时按 100")
# Base64 of a JPEG or PNG (their first bytes fixed), optionally as a data: URL; decoded at most 2 MB.
PHOTO_PATTERN = (r"^(?:|(?:data:image/(?:jpeg|png);base64,)?(?:/9j/|iVBORw0KGg[o-r][A-Za-z0-9+/])"
                 r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)$")
PHOTO_MAX_LENGTH = 2_800_000  # base64 of 2 MB, with room for a data: URL prefix
PHOTO = Field("photo", required=False, allow_empty=True, max_length=PHOTO_MAX_LENGTH, pattern=PHOTO_PATTERN,
              pattern_message="应为 JPEG 或 PNG 图片的 base64", description="照片，JPEG/PNG 的 base64，不超过 2 MB")
MAX_RETINUES = 20
# An application carries up to 1 + MAX_RETINUES photos besides its few hundred bytes of fields.
APPLICATION_MAX_BODY = (1 + MAX_RETINUES) * PHOTO_MAX_LENGTH + DEFAULT_BODY_LIMIT

RETINUE = Schema(name_field("name", description="随行人员姓名"),
                 phone_field("phone", description="随行人员手机号码"), PHOTO)
APPLICATION = Schema(
    Field("subject_type", "integer", choices=[1], description="1：访客"),
    name_field("name", description="访客姓名"),
    phone_field("phone", description="访客手机号码"),
    Field("purpose", "integer", default=0, choices=[0, 1, 2, 3, 4],
          description="来访目的：0 其它，1 面试，2 商务，3 亲友，4 快递送货"),
    text_field("remark", 200, default="", allow_empty=True, description="备注"),
    name_field("come_from", 64, default="", allow_empty=True, description="访客单位"),
    phone_field("proposer", description="申请人的手机号码（本人绑定的手机号）"),
    name_field("interviewee", description="被访人姓名"),
    phone_field("interviewee_phone", description="被访人手机号码"),
    time_field("start_time", description="来访开始时间（Unix 秒）"),
    time_field("end_time", description="来访结束时间（Unix 秒）"),
    PHOTO,
    Field("retinues", "array", default=[], items=RETINUE, max_items=MAX_RETINUES, aliases=("retinue",),
          description="随行人员"),
)
RECORD_FILTERS = (
    name_field("name", required=False, allow_empty=True, description="访客姓名，模糊匹配"),
    _filter_phone("phone", "访客手机号码"),
    name_field("interviewee", required=False, allow_empty=True, description="被访人姓名，模糊匹配"),
    _filter_phone("interviewee_phone", "被访人手机号码"),
    time_field("start_time", required=False, description="与来访时间段重叠的起点"),
    time_field("end_time", required=False, description="与来访时间段重叠的终点"),
    Field("is_auth", "integer", required=False, choices=[0, 1], description="0 未授权，1 已授权"),
)
_STATUS_WORD = "(?:" + "|".join(lifecycle.STATUSES) + ")"
STATUS_FILTER = Field(
    "status", required=False, allow_empty=True, max_length=200,
    check=lambda text: lifecycle.parse_statuses(text) if text else None,
    pattern=f"^(?:{_STATUS_WORD}(?:,{_STATUS_WORD})*)?$", pattern_message="取值无效，可选：" + ", ".join(lifecycle.STATUSES),
    description="状态，多个用逗号分隔：" + "，".join(f"{k} {v}" for k, v in lifecycle.LABELS.items()))
RECORDS_QUERY = Schema(
    Field("type", choices=["mobile", "web"], description="mobile：手机端（本人的记录）；web：管理端"),
    _filter_phone("proposer", "申请人手机号码；手机端须为本人绑定的手机号，默认本人"),
    *RECORD_FILTERS, STATUS_FILTER, PAGE, SIZE,
)
AUTH_RECORDS_QUERY = Schema(_filter_phone("phone", "员工的手机号码（默认本人）"), STATUS_FILTER, PAGE, SIZE)

_PERSON = {"subject_id": "integer", "name": "string", "phone": "string", "photo": "string",
           "qrcode": "string", "qrcode_img_url": "string"}
PERSON_SCHEMA = {"type": "object", "properties": {k: {"type": t} for k, t in _PERSON.items()}}
RECORD_SCHEMA = {"type": "object", "properties": {
    **PERSON_SCHEMA["properties"],
    **{k: {"type": t} for k, t in (
        ("id", "integer"), ("subject_type", "integer"), ("purpose", "integer"), ("remark", "string"),
        ("come_from", "string"), ("proposer", "string"), ("interviewee", "string"),
        ("interviewee_phone", "string"), ("department", "string"), ("start_time", "integer"),
        ("end_time", "integer"), ("group_ids", "string"), ("is_auth", "integer"), ("signin_time", "integer"),
        ("create_time", "integer"))},
    "status": {"type": "string", "enum": list(lifecycle.STATUSES)},
    "retinues": {"type": "array", "items": PERSON_SCHEMA},
    "anonymized": {"type": "boolean", "description": "已按数据保留期限匿名化（姓名、手机号已遮盖，照片和二维码已删除）"},
}}


class VisitHandler(APIHandler):
    """Shared: records shaped as the seed shows them, with absolute URLs under cloud_url."""

    async def present(self, records: list[dict]) -> list[dict]:
        base = await self.public_url("")
        return [self.ctx.visits.present(record, base) for record in records]


class ApplicationHandler(VisitHandler):
    """3 访客申请（员工邀约或访客申请）."""

    @api(allow=[Role.VISITOR, Role.EMPLOYEE], summary="访客申请（访客每天最多 10 次）或邀约（员工每天最多 30 次）",
         body=APPLICATION, data=RECORD_SCHEMA, max_body=APPLICATION_MAX_BODY, errors=(404, 502))
    async def post(self):
        async with self.ctx.visit_limits.applying(self.principal.binding):
            record = await self.ctx.visits.apply(self.principal.binding, self.body)
        self.ok((await self.present([record]))[0])


class RecordsHandler(VisitHandler):
    """5 查询访客申请记录."""

    @api(allow=[Role.VISITOR, Role.EMPLOYEE, Role.ADMIN], summary="查询访客申请记录（按来访时间倒序）",
         query=RECORDS_QUERY, data={"type": "array", "items": RECORD_SCHEMA}, paged=True)
    async def get(self):
        args = self.query
        if args["type"] == "web":
            if self.principal.role != Role.ADMIN:
                raise ApiError(403, "只有管理员可以查询全部访客记录")
            query = self.ctx.visits.filters(args)
        else:
            own = self.principal.binding["phone"] if self.principal.role != Role.ADMIN else ""
            proposer = args.get("proposer") or own
            if own and proposer != own:
                raise ApiError(403, "只能查询本人的访客记录")
            # "My records": what I applied for or invited, and visits where I am the visitor (an
            # admin without a proposer: everyone's).
            query = self.ctx.visits.filters({**args, "proposer": ""}, party=proposer)
        records, page = await self.ctx.visits.find(query, args["page"], args["size"])
        self.ok(await self.present(records), page)


class AuthRecordsHandler(VisitHandler):
    """6 员工查询授权记录."""

    @api(allow=[Role.EMPLOYEE, Role.ADMIN], summary="员工查询需要本人授权的访客记录",
         query=AUTH_RECORDS_QUERY, data={"type": "array", "items": RECORD_SCHEMA}, paged=True)
    async def get(self):
        phone = self.query.get("phone")
        if self.principal.role == Role.EMPLOYEE:
            own = self.principal.binding["phone"]
            if phone and phone != own:
                raise ApiError(403, "只能查询本人的授权记录")
            phone = own
        query = self.ctx.visits.filters({"interviewee_phone": phone, "status": self.query.get("status")})
        records, page = await self.ctx.visits.find(query, self.query["page"], self.query["size"])
        self.ok(await self.present(records), page)


class AuthorizeHandler(VisitHandler):
    """7 员工授权."""

    @api(allow=[Role.EMPLOYEE, Role.ADMIN], summary="被访员工授权访客申请", path=RECORD_ID, errors=(404, 409))
    async def put(self, id: int):
        employee_phone = self.principal.binding["phone"] if self.principal.role == Role.EMPLOYEE else None
        await self.ctx.visits.authorize(id, employee_phone)
        self.ok()


class DeclineHandler(VisitHandler):
    """拒绝来访 (CONTRACT §9)."""

    @api(allow=[Role.EMPLOYEE, Role.ADMIN], summary="被访员工或管理员拒绝来访（签到前）", path=RECORD_ID,
         body=Schema(text_field("reason", 100, default="", allow_empty=True, description="拒绝原因（可选）")),
         data=RECORD_SCHEMA, errors=(404, 409))
    async def post(self, id: int):
        employee_phone = self.principal.binding["phone"] if self.principal.role == Role.EMPLOYEE else None
        record = await self.ctx.visits.decline(id, employee_phone, self.body["reason"])
        self.ok((await self.present([record]))[0])


class CancelHandler(VisitHandler):
    """取消预约 (CONTRACT §9)."""

    @api(allow=[Role.VISITOR, Role.EMPLOYEE, Role.ADMIN], summary="申请人或管理员取消预约（签到前）", path=RECORD_ID,
         data=RECORD_SCHEMA, errors=(404, 409))
    async def post(self, id: int):
        binding = self.principal.binding if self.principal.role != Role.ADMIN else None
        record = await self.ctx.visits.cancel(id, binding)
        self.ok((await self.present([record]))[0])


class SignoutHandler(VisitHandler):
    """签退 (CONTRACT §9)."""

    @api(allow=[Role.KIOSK, Role.ADMIN], summary="签到机签退：今天已签到的来访结束，二维码失效",
         body=Schema(phone_field("phone", description="访客或任一随行人员的手机号码")), data=RECORD_SCHEMA,
         errors=(404, 409))
    async def post(self):
        record = await self.ctx.visits.sign_out(self.body["phone"])
        self.ok((await self.present([record]))[0])


class RecordHandler(VisitHandler):
    """Admin 3.1 删除访客申请记录."""

    @api(allow=[Role.ADMIN], summary="删除访客申请记录（二维码立即失效，考拉中的访客随后删除）", path=RECORD_ID,
         errors=(404,))
    async def delete(self, id: int):
        await self.ctx.visits.delete(id)
        self.ok()


class SigninHandler(VisitHandler):
    """Admin 4.1 访客签到."""

    @api(allow=[Role.KIOSK, Role.ADMIN], summary="签到机签到：写入考拉并生成每人的通行二维码",
         body=Schema(phone_field("phone", description="访客或任一随行人员的手机号码")), data=RECORD_SCHEMA,
         errors=(404, 409, 502))
    async def post(self):
        record = await self.ctx.visits.signin(self.body["phone"])
        self.ok((await self.present([record]))[0])


class GateHandler(APIHandler):
    """Admin 4.2 访客二维码验证: the scan is wxapp.gate.Gate's; a scan whose key and token this process
    holds is answered without waiting."""

    quiet_access_log = True  # every decision is recorded in the gate log instead

    @api(allow=[Role.GATE, Role.KIOSK, Role.ADMIN], summary="闸机验证访客二维码",
         description="code 0 放行；-201 二维码无效，-202 未到访问时间，-203 未签到，-204 无通行权限，-209 通行权限已过期",
         body=gate.SCAN, max_body=gate.SCAN_MAX_BODY)
    def post(self):
        code = self.ctx.gate.scan_now(self.principal, self.body)
        if code is None:
            return self._scan()
        self.write_envelope(code, gate.MESSAGES[code])
        return None

    async def _scan(self) -> None:
        code = await self.ctx.gate.scan(self.principal, self.body)
        self.write_envelope(code, gate.MESSAGES[code])


default_handlers = [
    (r"/v1/visit/qrcode", GateHandler),  # first: Tornado tries the routes in order, and gates call most
    (r"/v1/subject", ApplicationHandler),
    (r"/v1/visit/records", RecordsHandler),
    (r"/v1/visit/records/(?P<id>[0-9]+)", RecordHandler),
    (r"/v1/auth/records", AuthRecordsHandler),
    (r"/v1/auth/(?P<id>[0-9]+)", AuthorizeHandler),
    (r"/v1/auth/(?P<id>[0-9]+)/decline", DeclineHandler),
    (r"/v1/visit/records/(?P<id>[0-9]+)/cancel", CancelHandler),
    (r"/v1/visit/signin", SigninHandler),
    (r"/v1/visit/signout", SignoutHandler),
]
