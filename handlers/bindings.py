"""H5 API 1, 1.1, 2, 2.1, 8, 9 (bindings) and POST /v1/sms/code (CONTRACT §5)."""
from __future__ import annotations

from wxapp.auth import Role
from wxapp.bindings import KIND_NAMES, avatar_path
from wxapp.errors import ApiError
from wxapp.validation import Field, Schema, name_field, phone_field

from .base import SMS_CODES, APIHandler, api

WEIXIN = Field("weixinUserId", max_length=64, description="公众号网页授权得到的 openid，必须是当前登录的微信用户")
CODE = Field("code", required=False, max_length=6, pattern="^[0-9]{6}$", pattern_message="验证码错误：应为 6 位数字",
             required_when=SMS_CODES, description="短信验证码（SMS_BACKEND=off 时不需要）")

EMPLOYEE_DATA = {"type": "object", "properties": {k: {"type": t} for k, t in (
    ("avatar", "string"), ("name", "string"), ("department", "string"), ("subject_id", "integer"),
    ("phone", "string"))}}
VISITOR_DATA = {"type": "object", "properties": {k: {"type": "string"} for k in ("nick", "avatar", "phone")}}
IS_BINDING_DATA = {"type": "object", "properties": {**EMPLOYEE_DATA["properties"], "type": {
    "type": "string", "enum": list(KIND_NAMES)}}}


class BindingHandler(APIHandler):
    """Shared by the binding endpoints: the caller must be the WeChat user they name."""

    def own_openid(self, weixin_user_id: str) -> str:
        """The session's openid; 403 when the request names someone else."""
        if weixin_user_id != self.principal.openid:
            raise ApiError(403, "weixinUserId 与当前登录的微信用户不一致")
        return weixin_user_id

    async def avatar_url(self, binding: dict) -> str:
        """The binding's avatar as an absolute URL."""
        path = avatar_path(binding)
        return await self.public_url(path) if path.startswith("/") else path

    async def employee_data(self, binding: dict | None) -> dict:
        if binding is None or binding["type"] != "employee":
            return {}
        return {"avatar": await self.avatar_url(binding), "name": binding["name"],
                "department": binding["department"], "subject_id": binding["subject_id"], "phone": binding["phone"]}

    async def visitor_data(self, binding: dict | None) -> dict:
        if binding is None or binding["type"] != "visitor":
            return {}
        return {"nick": binding["name"], "avatar": await self.avatar_url(binding), "phone": binding["phone"]}


class EmployeeBindingHandler(BindingHandler):
    """1 / 1.1 员工查询、绑定."""

    @api(allow=[Role.WECHAT], summary="员工查询微信是否已绑定", query=Schema(WEIXIN), data=EMPLOYEE_DATA)
    async def get(self):
        openid = self.own_openid(self.query["weixinUserId"])
        self.ok(await self.employee_data(await self.ctx.bindings.get(openid)))

    @api(allow=[Role.WECHAT], summary="员工微信绑定（姓名和手机号须与考拉中的员工一致）", data=EMPLOYEE_DATA, errors=(404, 409, 502),
         body=Schema(WEIXIN, name_field("name", description="员工姓名（与考拉中一致）"), phone_field("phone"), CODE))
    async def post(self):
        openid = self.own_openid(self.body["weixinUserId"])
        binding = await self.ctx.bindings.bind_employee(openid, self.body["name"], self.body["phone"],
                                                        self.body.get("code"))
        self.ok(await self.employee_data(binding))


class VisitorBindingHandler(BindingHandler):
    """2 / 2.1 访客查询、绑定."""

    @api(allow=[Role.WECHAT], summary="访客查询微信是否已绑定", query=Schema(WEIXIN), data=VISITOR_DATA)
    async def get(self):
        openid = self.own_openid(self.query["weixinUserId"])
        self.ok(await self.visitor_data(await self.ctx.bindings.get(openid)))

    @api(allow=[Role.WECHAT], summary="访客微信绑定手机号", data=VISITOR_DATA, errors=(409,),
         body=Schema(WEIXIN, phone_field("phone"), CODE))
    async def post(self):
        openid = self.own_openid(self.body["weixinUserId"])
        binding = await self.ctx.bindings.bind_visitor(openid, self.body["phone"], self.body.get("code"))
        self.ok(await self.visitor_data(binding))


class UnbindHandler(BindingHandler):
    """8 微信解除绑定."""

    @api(allow=[Role.WECHAT], summary="微信解除绑定（员工或访客）", path=Schema(WEIXIN), errors=(404,))
    async def delete(self, weixinUserId: str):
        await self.ctx.bindings.unbind(self.own_openid(weixinUserId))
        self.ok()


class IsBindingHandler(BindingHandler):
    """9 查询微信是否已绑定."""

    @api(allow=[Role.WECHAT], summary="查询微信是否已绑定及绑定类型", query=Schema(WEIXIN), data=IS_BINDING_DATA,
         errors=(404,))
    async def get(self):
        binding = await self.ctx.bindings.get(self.own_openid(self.query["weixinUserId"]))
        if binding is None:
            raise ApiError(404, "没有该微信号绑定的用户")
        self.ok({"type": binding["type"], "name": binding["name"], "department": binding["department"],
                 "subject_id": binding["subject_id"], "avatar": await self.avatar_url(binding),
                 "phone": binding["phone"]})


class SmsCodeHandler(APIHandler):
    """Send a binding verification code."""

    @api(allow=[Role.WECHAT], summary="发送绑定验证码短信（每号每分钟 1 条、每天 10 条；每个微信用户每小时最多 5 个号码，"
                                      "每个客户端地址每小时最多 20 条）", errors=(429, 502),
         body=Schema(phone_field("phone", mainland=True, description="中国大陆手机号码")))
    async def post(self):
        await self.ctx.codes.send(self.body["phone"], openid=self.principal.openid, address=self.request.remote_ip)
        self.ok()


default_handlers = [
    (r"/v1/subject/binding", EmployeeBindingHandler),
    (r"/v1/subject/binding/(?P<weixinUserId>[^/]+)", UnbindHandler),
    (r"/v1/visitor/binding", VisitorBindingHandler),
    (r"/v1/wechat/is_binding", IsBindingHandler),
    (r"/v1/sms/code", SmsCodeHandler),
]
