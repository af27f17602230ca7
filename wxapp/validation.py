"""Declarative input validation: each endpoint declares its fields once; the same
declaration parses requests and describes them in the OpenAPI document."""
from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Iterable, Mapping

from .errors import bad_request

_TYPE_NAMES = {"string": "字符串", "integer": "整数", "object": "对象", "array": "数组", "boolean": "布尔值"}
_MISSING = object()

# Every integer is bounded, so no value reaches MongoDB (int64) or the clock beyond what they hold.
MAX_INTEGER = 2**53 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,20}")  # an integer as query strings and forms carry it (ASCII digits only)

# What str.strip() removes around a string, as a character class usable in Python and in ECMA 262
# (the OpenAPI document's regex dialect): exactly the characters for which str.isspace() is true.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Never part of a name: C0 and C1 controls, DEL, line/paragraph separators, the BOM and every
# bidirectional mark, embedding, override and isolate (they make a name read differently than it is stored).
CONTROLS = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
# A string that is not only whitespace (strings are stored stripped).
NOT_BLANK = f"[^{WHITESPACE}]"
# A name: no control or bidi character, and something besides whitespace.
NAME = f"^[^{CONTROLS}]*[^{CONTROLS}{WHITESPACE}][^{CONTROLS}]*$"
# A name filter, which may be empty.
NAME_OR_EMPTY = f"^[^{CONTROLS}]*$"
# Free text (a remark): line breaks and tabs allowed, other controls and bidi characters not.
TEXT = "^[^" + CONTROLS.replace(r"\x00-\x1f", r"\x00-\x08\x0b\x0c\x0e-\x1f") + "]*$"


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
        pattern: str | None = None,
        pattern_message: str = "格式不正确",
        required_when: str | None = None,
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
        # Optional here, but required by the domain when this configuration flag is set (the SMS
        # code while SMS is on): the OpenAPI document, built for one configuration, says so.
        self.required_when = required_when
        if kind == "string" and pattern is None and not allow_empty:
            pattern = NOT_BLANK
        self.pattern = pattern
        self.pattern_message = pattern_message if pattern != NOT_BLANK else "不能为空"
        # JSON Schema patterns search (unanchored); ECMA's `$` ends the string, Python's also matches
        # before a final newline, hence `\Z`.
        self._regex = re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern) if pattern else None

    def _fail(self, message: str):
        raise bad_request(f"参数 {self.name} {message}")

    def parse(self, raw: Any, textual: bool = False) -> Any:
        """Convert and check one raw value; raise a 400 ApiError naming the field. `textual`: the value
        comes from a query string, a form or a path, where integers arrive as decimal strings."""
        value = self._convert(raw, textual)
        if self.kind == "string":
            if self.max_length is not None and len(value) > self.max_length:
                self._fail(f"长度不能超过 {self.max_length} 个字符")
            if not value and not self.allow_empty:
                self._fail("不能为空")
            if self._regex is not None and not self._regex.search(value):
                self._fail(self.pattern_message)
            if self.choices is None:  # a choice is taken as written, as the document's enum says
                value = value.strip()
        if self.kind == "integer" and isinstance(value, int):
            if value < self.minimum_or_default:
                self._fail(f"不能小于 {self.minimum_or_default}")
            if value > self.maximum_or_default:
                self._fail(f"不能大于 {self.maximum_or_default}")
        if self.kind == "array":
            if self.max_items is not None and len(value) > self.max_items:
                self._fail(f"最多 {self.max_items} 项")
            if self.items is not None:
                value = [self.items.load(item, prefix=f"{self.name}[{i}].", textual=textual)
                         for i, item in enumerate(value)]
        if self.choices is not None and value not in self.choices:
            self._fail("取值无效")
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                self._fail(str(exc))
        return value

    @property
    def minimum_or_default(self) -> int:
        return self.minimum if self.minimum is not None else -MAX_INTEGER

    @property
    def maximum_or_default(self) -> int:
        return self.maximum if self.maximum is not None else MAX_INTEGER

    def _convert(self, raw: Any, textual: bool) -> Any:
        if self.convert is not None:
            try:
                return self.convert(raw)
            except ValueError as exc:
                self._fail(str(exc))
        if self.kind == "string":
            if not isinstance(raw, str):
                self._fail("应为字符串")
            if not _is_unicode(raw):
                self._fail("含有无效字符")
            return raw
        if self.kind == "integer":
            return self._integer(raw, textual)
        if self.kind == "boolean":
            if isinstance(raw, bool):
                return raw
            if textual and raw in ("true", "1", "false", "0"):
                return raw in ("true", "1")
            self._fail("应为布尔值")
        if self.kind == "object" and not isinstance(raw, dict):
            self._fail("应为对象")
        if self.kind == "array" and not isinstance(raw, list):
            self._fail("应为数组")
        return raw

    def _integer(self, raw: Any, textual: bool) -> int:
        if textual:
            if isinstance(raw, str) and _DECIMAL.fullmatch(raw):
                return int(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        elif isinstance(raw, float) and raw.is_integer():  # JSON Schema: 1.0 is an integer
            return int(raw)
        self._fail("应为整数")

    def json_schema(self) -> dict:
        """This field as a JSON Schema (OpenAPI 3.1) property."""
        if "anyOf" in self.extra_schema:  # a converted field describes its accepted forms itself
            schema: dict[str, Any] = {"description": self.description} if self.description else {}
            if self.default is not _MISSING:
                schema["default"] = self.default
            return {**schema, **self.extra_schema}
        schema = {"type": self.kind}
        if self.description:
            schema["description"] = self.description
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.kind == "string" and not self.allow_empty:
            schema["minLength"] = 1
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.kind == "integer":
            schema["minimum"] = self.minimum_or_default
            schema["maximum"] = self.maximum_or_default
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

    def load(self, data: Any, prefix: str = "", textual: bool = False) -> dict:
        """Parse `data` (a mapping); unknown keys are ignored, missing required ones are a 400, and so
        is null (no field is nullable). `textual`: see Field.parse."""
        if not isinstance(data, Mapping):
            raise bad_request(f"参数 {prefix.rstrip('.') or '请求体'} 应为对象")
        result = {}
        for field in self.fields:
            name = field.name
            given = [key for key in (field.name, *field.aliases) if key in data]
            for key in given:
                if data[key] is None:
                    raise bad_request(f"参数 {prefix}{key} 不能为 null")
            for alias in given[1:]:  # the value is the first one's, but each is checked as documented
                _renamed(field, prefix + alias).parse(data[alias], textual)
            raw = data[given[0]] if given else _MISSING
            if raw is _MISSING:
                if field.required:
                    raise bad_request(f"缺少参数 {prefix}{field.name}")
                if field.default is not _MISSING:
                    result[field.name] = field.default
                continue
            if prefix or given[0] != field.name:
                field = _renamed(field, prefix + given[0])
            result[name] = field.parse(raw, textual)
        return result

    def json_schema(self, flags: frozenset[str] = frozenset()) -> dict:
        """This schema as a JSON Schema object, for a configuration with the given `flags` set."""
        properties = {f.name: f.json_schema() for f in self.fields}
        for f in self.fields:
            properties.update({alias: properties[f.name] for alias in f.aliases})
        schema = {"type": "object", "properties": properties,
                  "required": [f.name for f in self.fields if f.required or f.required_when in flags]}
        return schema

    def parameters(self, location: str = "query", flags: frozenset[str] = frozenset()) -> list[dict]:
        """This schema as OpenAPI parameters (for query strings)."""
        return [
            {"name": f.name, "in": location, "required": f.required or f.required_when in flags,
             "schema": f.json_schema()}
            for f in self.fields
        ]


# A page of a list, for the API and the pages alike (skip = (page - 1) × size stays far inside int64).
MAX_PAGE = 100_000
PAGE = Field("page", "integer", default=1, minimum=1, maximum=MAX_PAGE, description="页码，从 1 开始")
# A visit record's id, wherever a path carries one.
MAX_RECORD_ID = MAX_INTEGER
RECORD_ID = Schema(Field("id", "integer", minimum=1, maximum=MAX_RECORD_ID, description="访客记录 id"))


def _is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON allows "\\ud800"; no store can keep it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _renamed(field: Field, name: str) -> Field:
    """A copy of `field` whose error messages name it as given, inside its parent (`retinues[0].name`)."""
    clone = object.__new__(Field)
    clone.__dict__.update(field.__dict__)
    clone.name = name
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


# Times: Unix seconds up to the year 5138, or a local "YYYY-MM-DD HH:MM:SS" of this century (a real
# calendar day: the pattern knows month lengths and leap years), or the seconds as a decimal string.
MAX_TIMESTAMP = 99_999_999_999
_DAY = (r"20[0-9]{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
        r"|02-(?:0[1-9]|1[0-9]|2[0-8]))|20(?:[02468][048]|[13579][26])-02-29")
TIME_PATTERN = rf"^(?:[0-9]{{1,11}}|(?:{_DAY}) (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])$"
_TIME = re.compile(TIME_PATTERN[:-1] + r"\Z")


def to_timestamp(raw: Any) -> int | datetime.datetime:
    """An integer Unix time, or a naive datetime from "YYYY-MM-DD HH:MM:SS" (the caller applies TIMEZONE)."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 0 <= raw <= MAX_TIMESTAMP:
            raise ValueError(f"应在 0 到 {MAX_TIMESTAMP} 之间")
        return raw
    if isinstance(raw, str) and _TIME.match(raw):
        if raw.isdigit():
            return int(raw)
        return datetime.datetime.strptime(raw, _DATETIME_FORMAT)
    raise ValueError("应为时间戳（秒）或 \"YYYY-MM-DD HH:MM:SS\"")


# What normalize_phone accepts, as written: `+?` and 5 to 20 digits, with whitespace and dashes anywhere.
_SEP = f"[{WHITESPACE}-]*"
PHONE_PATTERN = rf"^{_SEP}(?:\+{_SEP})?(?:[0-9]{_SEP}){{5,20}}$"
# A mainland mobile (SMS goes only to these, see mainland_mobile), written the same way.
MAINLAND_MOBILE_PATTERN = rf"^{_SEP}(?:\+{_SEP}8{_SEP}6{_SEP}|8{_SEP}6{_SEP})?1{_SEP}[3-9]{_SEP}(?:[0-9]{_SEP}){{9}}$"
NAME_MESSAGE = "不能只有空白，也不能含控制字符或文字方向控制字符"


def phone_field(name: str, *, mainland: bool = False, **kwargs) -> Field:
    """A phone number field, normalised; `mainland`: only a mainland mobile will do."""
    if mainland:
        return Field(name, max_length=24, check=normalize_phone, pattern=MAINLAND_MOBILE_PATTERN,
                     pattern_message="应为中国大陆手机号码", **kwargs)
    return Field(name, max_length=24, check=normalize_phone, pattern=PHONE_PATTERN,
                 pattern_message="不是有效的手机号码", **kwargs)


def name_field(name: str, max_length: int = 32, **kwargs) -> Field:
    """A name (of a person, a company, a gate): no control or bidi characters, not only whitespace;
    with `allow_empty` (a search filter) it may be empty."""
    pattern = NAME_OR_EMPTY if kwargs.get("allow_empty") else NAME
    return Field(name, max_length=max_length, pattern=pattern, pattern_message=NAME_MESSAGE, **kwargs)


_NAME = re.compile(NAME[:-1] + r"\Z")


def is_name(text: str) -> bool:
    """Whether `text` is acceptable as a name (see NAME)."""
    return bool(_NAME.match(text))


def text_field(name: str, max_length: int, **kwargs) -> Field:
    """Free text (a remark): line breaks allowed, other control and bidi characters not."""
    return Field(name, max_length=max_length, pattern=TEXT, pattern_message="不能含控制字符或文字方向控制字符",
                 **kwargs)


def time_field(name: str, **kwargs) -> Field:
    """A time field: Unix seconds, or a local "YYYY-MM-DD HH:MM:SS"."""
    schema = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_TIMESTAMP},
                        {"type": "string", "pattern": TIME_PATTERN}]}
    return Field(name, "integer", convert=to_timestamp, json_schema=schema, **kwargs)
