"""Declarative input validation: each endpoint declares its fields once; the same
declaration parses requests and describes them in the OpenAPI document."""
from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Iterable, Mapping

from .errors import bad_request

_TYPE_NAMES = {"string": "字符串", "integer": "整数", "object": "对象", "array": "数组", "boolean": "布尔值"}
_MISSING = object()


class Field:
    """One named input: its JSON type, whether it is required, and its bounds."""

    def __init__(
        self,
        name: str,
        kind: str = "string",
        *,
        required: bool = True,
        default: Any = _MISSING,
        allow_empty: bool = False,
        max_length: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        choices: Iterable[Any] | None = None,
        check: Callable[[Any], Any] | None = None,
        items: "Schema | None" = None,
        max_items: int | None = None,
        aliases: Iterable[str] = (),
        description: str = "",
        example: Any = _MISSING,
        json_schema: Mapping[str, Any] | None = None,
        convert: Callable[[Any], Any] | None = None,
    ):
        if kind not in _TYPE_NAMES:
            raise ValueError(f"unknown field kind {kind!r}")
        self.name = name
        self.kind = kind
        self.required = required and default is _MISSING
        self.default = default
        self.allow_empty = allow_empty
        self.max_length = max_length
        self.minimum = minimum
        self.maximum = maximum
        self.choices = tuple(choices) if choices is not None else None
        self.check = check
        self.items = items
        self.max_items = max_items
        self.aliases = tuple(aliases)
        self.description = description
        self.example = example
        self.extra_schema = dict(json_schema or {})
        self.convert = convert

    def _fail(self, message: str):
        raise bad_request(f"参数 {self.name} {message}")

    def parse(self, raw: Any) -> Any:
        """Convert and check one raw value; raise a 400 ApiError naming the field."""
        value = self._convert(raw)
        if self.kind == "string":
            if not value and not self.allow_empty:
                self._fail("不能为空")
            if self.max_length is not None and len(value) > self.max_length:
                self._fail(f"长度不能超过 {self.max_length} 个字符")
        if self.kind == "integer":
            if self.minimum is not None and value < self.minimum:
                self._fail(f"不能小于 {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                self._fail(f"不能大于 {self.maximum}")
        if self.kind == "array":
            if self.max_items is not None and len(value) > self.max_items:
                self._fail(f"最多 {self.max_items} 项")
            if self.items is not None:
                value = [self.items.load(item, prefix=f"{self.name}[{i}].") for i, item in enumerate(value)]
        if self.choices is not None and value not in self.choices:
            self._fail("取值无效")
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                self._fail(str(exc))
        return value

    def _convert(self, raw: Any) -> Any:
        if self.convert is not None:
            try:
                return self.convert(raw)
            except ValueError as exc:
                self._fail(str(exc))
        if self.kind == "string":
            if not isinstance(raw, str):
                self._fail("应为字符串")
            return raw.strip()
        if self.kind == "integer":
            if isinstance(raw, bool):
                self._fail("应为整数")
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
                return int(raw.strip())
            self._fail("应为整数")
        if self.kind == "boolean":
            if isinstance(raw, bool):
                return raw
            if raw in ("true", "1", 1):
                return True
            if raw in ("false", "0", 0):
                return False
            self._fail("应为布尔值")
        if self.kind == "object" and not isinstance(raw, dict):
            self._fail("应为对象")
        if self.kind == "array" and not isinstance(raw, list):
            self._fail("应为数组")
        return raw

    def json_schema(self) -> dict:
        """This field as a JSON Schema (OpenAPI 3.1) property."""
        schema: dict[str, Any] = {"type": self.kind}
        if self.description:
            schema["description"] = self.description
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.kind == "string" and not self.allow_empty:
            schema["minLength"] = 1
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.default is not _MISSING:
            schema["default"] = self.default
        if self.example is not _MISSING:
            schema["examples"] = [self.example]
        if self.items is not None:
            schema["items"] = self.items.json_schema()
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        schema.update(self.extra_schema)
        return schema


class Schema:
    """An ordered set of fields: loads a request's arguments into checked Python values."""

    def __init__(self, *fields: Field):
        self.fields = fields

    def load(self, data: Any, prefix: str = "") -> dict:
        """Parse `data` (a mapping); unknown keys are ignored, missing required ones are a 400."""
        if not isinstance(data, Mapping):
            raise bad_request(f"参数 {prefix.rstrip('.') or '请求体'} 应为对象")
        result = {}
        for field in self.fields:
            raw = _MISSING
            for key in (field.name, *field.aliases):
                if key in data and data[key] is not None:
                    raw = data[key]
                    break
            if raw is _MISSING:
                if field.required:
                    raise bad_request(f"缺少参数 {prefix}{field.name}")
                if field.default is not _MISSING:
                    result[field.name] = field.default
                continue
            if prefix:
                field = _prefixed(field, prefix)
            result[field.name.removeprefix(prefix)] = field.parse(raw)
        return result

    def json_schema(self) -> dict:
        """This schema as a JSON Schema object."""
        return {
            "type": "object",
            "properties": {f.name: f.json_schema() for f in self.fields},
            "required": [f.name for f in self.fields if f.required],
        }

    def parameters(self, location: str = "query") -> list[dict]:
        """This schema as OpenAPI parameters (for query strings)."""
        return [
            {"name": f.name, "in": location, "required": f.required, "schema": f.json_schema()}
            for f in self.fields
        ]


def _prefixed(field: Field, prefix: str) -> Field:
    """A copy of `field` whose error messages name it inside its parent (`retinues[0].name`)."""
    clone = object.__new__(Field)
    clone.__dict__.update(field.__dict__)
    clone.name = prefix + field.name
    return clone


_PHONE = re.compile(r"^\+?[0-9]{5,20}$")
_MAINLAND_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9][0-9]{9})$")
_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def normalize_phone(value: str) -> str:
    """The one form of a phone, used before every lookup, limit and message: spaces and dashes
    stripped (CONTRACT §3), and a mainland mobile written `+86139…`, `86139…` or `139…` reduced to
    its 11 digits, so that one handset is one phone everywhere. ValueError unless it looks like a phone."""
    phone = re.sub(r"[\s-]", "", value or "")
    if not _PHONE.match(phone):
        raise ValueError("不是有效的手机号码")
    mobile = _MAINLAND_MOBILE.match(phone)
    return mobile.group(1) if mobile else phone


def mainland_mobile(phone: str) -> str | None:
    """The 11-digit mainland mobile number `phone` is, or None (SMS goes only to these)."""
    try:
        phone = normalize_phone(phone)
    except ValueError:
        return None
    return phone if _MAINLAND_MOBILE.match(phone) and len(phone) == 11 else None


def to_timestamp(raw: Any) -> int | datetime.datetime:
    """An integer Unix time, or a naive datetime from "YYYY-MM-DD HH:MM:SS" (the caller applies TIMEZONE)."""
    if isinstance(raw, bool):
        raise ValueError("应为时间戳（秒）")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if text.isdigit():
            return int(text)
        try:
            return datetime.datetime.strptime(text, _DATETIME_FORMAT)
        except ValueError:
            pass
    raise ValueError("应为时间戳（秒）或 \"YYYY-MM-DD HH:MM:SS\"")


def phone_field(name: str, **kwargs) -> Field:
    """A phone number field, normalised."""
    return Field(name, max_length=24, check=normalize_phone, **kwargs)


def time_field(name: str, **kwargs) -> Field:
    """A time field: Unix seconds, or a local "YYYY-MM-DD HH:MM:SS"."""
    return Field(name, "integer", convert=to_timestamp, json_schema={"type": ["integer", "string"]}, **kwargs)
