"""The one error type of the application: a code, an HTTP status and a Chinese message."""
from __future__ import annotations

# Default HTTP status for each envelope code (CONTRACT §2); gate decisions answer 200.
_STATUS = {400: 400, 401: 401, 403: 403, 404: 404, 405: 405, 409: 409, 429: 429,
           500: 500, 502: 502, 503: 503}

DEFAULT_MESSAGES = {
    400: "请求参数错误",
    401: "请先登录",
    403: "没有权限执行该操作",
    404: "请求的资源不存在",
    405: "不支持该请求方法",
    409: "操作冲突",
    429: "请求过于频繁，请稍后再试",
    500: "服务器内部错误，请稍后再试",
    502: "外部服务暂时不可用，请稍后再试",
    503: "数据服务暂时不可用，请稍后再试",
}


class ApiError(Exception):
    """An error a caller sees: envelope `code`, HTTP `status` and a Chinese `message`."""

    def __init__(self, code: int, message: str | None = None, status: int | None = None):
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, "请求失败")
        self.status = status or _STATUS.get(code, 200)
        super().__init__(f"{self.code}: {self.message}")


def bad_request(message: str) -> ApiError:
    """A 400 naming what is wrong with the input."""
    return ApiError(400, message)


def not_found(message: str | None = None) -> ApiError:
    """A 404."""
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    """A 409."""
    return ApiError(409, message)


def upstream_failed(message: str | None = None) -> ApiError:
    """A 502: Koala, WeChat or the SMS service failed and nothing was changed."""
    return ApiError(502, message)
