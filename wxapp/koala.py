"""Megvii Koala (考拉) admin HTTP client: employees, visitor subjects, photos, avatars."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import uuid
from http.cookies import CookieError, SimpleCookie
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from .errors import not_found, upstream_failed
from .system_settings import KoalaAccount
from .validation import normalize_phone

log = logging.getLogger(__name__)

SESSION_TTL = 3600  # seconds a Koala session cookie is reused before logging in again
PAGE_SIZE = 100
MAX_PAGES = 100  # guards against a Koala that ignores `page` and never reports a total
UNAVAILABLE = "考拉系统暂时无法访问"
_MARK = re.compile(r"访客预约#([0-9a-f]*)-(\d+)-(\d+)-(\d+)")


@dataclasses.dataclass(frozen=True)
class SubjectMark:
    """What this system writes at the head of the `remark` of every visitor subject it creates, so the
    subject can be recognised later as ours, and as which person (0 the visitor, then the retinues) of
    which record, created when: after a create whose answer never came, and by the reconciliation."""

    system: str
    record_id: int
    person: int
    at: int

    def text(self) -> str:
        """The mark as written into Koala."""
        return f"访客预约#{self.system}-{self.record_id}-{self.person}-{self.at}"

    @classmethod
    def parse(cls, remark) -> "SubjectMark | None":
        """The mark at the head of a subject's remark, or None."""
        found = _MARK.match(remark) if isinstance(remark, str) else None
        if found is None:
            return None
        return cls(found.group(1), int(found.group(2)), int(found.group(3)), int(found.group(4)))


class KoalaError(Exception):
    """Koala failed, timed out, or refused; `.message` is a Chinese sentence safe to show a user."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class KoalaNotConfigured(KoalaError):
    """No Koala address is saved in the servers settings."""

    def __init__(self, message: str = "考拉系统尚未配置"):
        super().__init__(message)


def _phone_of(subject: dict) -> str:
    """A Koala subject's phone in its normal form ("" when Koala holds none or nonsense)."""
    try:
        return normalize_phone(subject.get("phone") or "")
    except ValueError:
        return ""


class KoalaClient:
    """Calls Koala with a login session shared by every server process through Redis."""

    def __init__(self, account: Callable[[], Awaitable[KoalaAccount | None]], redis, *, timeout: float = 10.0,
                 system: str = ""):
        self._account = account
        self._redis = redis
        self.timeout = timeout
        # Names this installation in the marks of the subjects it creates (see SubjectMark), so
        # another system sharing the Koala never takes our subjects for its own, nor we theirs.
        self.system = system
        self._login_lock = asyncio.Lock()

    def mark(self, record_id: int, person: int, at: float) -> SubjectMark:
        """The mark of a subject this system is about to create for a person of a record."""
        return SubjectMark(self.system, record_id, person, int(at))

    async def find_employee(self, name: str, phone: str) -> dict | None:
        """The employee whose name is exactly `name` and whose phone is `phone`, or None."""
        name = name.strip()
        try:
            wanted = normalize_phone(phone)
        except ValueError:
            return None
        if not name:
            return None
        async for subject in self._subjects("employee", name):
            if (subject.get("name") or "").strip() == name and _phone_of(subject) == wanted:
                return subject
        return None

    async def find_employee_by_phone(self, phone: str, name_hint: str = "") -> dict | None:
        """The employee whose phone is `phone`, or None: looked for among those named like
        `name_hint` first (one short search when the caller typed the name right), then among all."""
        try:
            wanted = normalize_phone(phone)
        except ValueError:
            return None
        for name in dict.fromkeys([name_hint.strip(), ""]):
            async for subject in self._subjects("employee", name):
                if _phone_of(subject) == wanted:
                    return subject
        return None

    async def marked_visitors(self, name: str = "") -> list[tuple[dict, SubjectMark]]:
        """The visitor subjects this system created (those whose name contains `name`, when given),
        each with its mark."""
        found = []
        async for subject in self._subjects("visitor", name):
            mark = SubjectMark.parse(subject.get("remark"))
            if mark is not None and mark.system == self.system and subject.get("id") is not None:
                found.append((subject, mark))
        return found

    async def _subjects(self, category: str, name: str = "") -> AsyncIterator[dict]:
        """The subjects of a category, page by page, optionally those whose name contains `name`."""
        for page in range(1, MAX_PAGES + 1):
            params = {"category": category, "page": page, "size": PAGE_SIZE}
            if name:
                params["name"] = name
            data = await self._call("GET", "/mobile-admin/subjects/list?" + urlencode(params))
            items = data.get("data") or []
            for subject in items:
                yield subject
            total = (data.get("page") or {}).get("total")
            if not items or (len(items) < PAGE_SIZE if total is None else page >= int(total)):
                break

    async def create_visitor(self, *, name: str, phone: str, start_time: int, end_time: int, interviewee: str,
                             come_from: str = "", purpose: int = 0, remark: str = "",
                             photo: bytes | None = None, mark: SubjectMark | None = None) -> int:
        """Create a visitor subject allowed in from `start_time` to `end_time`, with `mark` at the head of
        its remark; returns its id."""
        if mark is not None:
            remark = f"{mark.text()} {remark}".rstrip()
        photo_ids = []
        if photo:
            boundary = uuid.uuid4().hex
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"photo.jpg\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
            uploaded = await self._call("POST", "/subject/photo", body=body,
                                        content_type=f"multipart/form-data; boundary={boundary}")
            photo_ids.append(self._data(uploaded)["id"])
        created = await self._call("POST", "/subject", json_body={
            "subject_type": 1, "name": name, "phone": phone, "start_time": int(start_time),
            "end_time": int(end_time), "interviewee": interviewee, "come_from": come_from,
            "purpose": purpose, "remark": remark, "photo_ids": photo_ids})
        return int(self._data(created)["id"])

    async def delete_subject(self, subject_id: int) -> None:
        """Delete a subject; one Koala no longer has counts as deleted."""
        await self._call("DELETE", f"/subject/{int(subject_id)}", missing_ok=True)

    async def fetch_image(self, path: str) -> tuple[bytes, str]:
        """The bytes and content type of an image on the Koala host (an avatar or photo path)."""
        resp = await self._call("GET", path, raw=True)
        return resp.body, resp.headers.get("Content-Type", "application/octet-stream")

    async def check(self) -> None:
        """Log in afresh and list one page of employees, to prove the settings work."""
        account = await self._settings()
        await self._login(account, fresh=True)
        await self._call("GET", "/mobile-admin/subjects/list?category=employee&page=1&size=1")

    async def _settings(self) -> KoalaAccount:
        account = await self._account()
        if account is None:
            raise KoalaNotConfigured()
        return account

    @staticmethod
    def _session_key(account: KoalaAccount) -> str:
        digest = hashlib.sha1(f"{account.base_url}\n{account.username}".encode()).hexdigest()
        return f"koala:session:{digest}"

    async def _login(self, account: KoalaAccount, *, stale: str | None = None, fresh: bool = False) -> str:
        """A new session cookie, or one another caller stored while we waited (unless `fresh`)."""
        async with self._login_lock:
            key = self._session_key(account)
            if not fresh:
                current = await self._redis.get(key)
                if current and current != stale:
                    return current
            body = json.dumps({"username": account.username, "password": account.password})
            resp = await self._fetch(account, "POST", "/auth/login", body=body, content_type="application/json")
            if resp.code >= 500:
                log.warning("Koala login answered HTTP %s", resp.code)
                raise KoalaError(UNAVAILABLE)
            data = self._json(resp, "/auth/login")
            if resp.code != 200 or data.get("code") != 0:
                log.warning("Koala login refused: HTTP %s %s", resp.code, data)
                raise KoalaError(f"考拉登录失败：{data.get('desc') or f'HTTP {resp.code}'}")
            cookie = SimpleCookie()
            try:
                for header in resp.headers.get_list("Set-Cookie"):
                    cookie.load(header)
            except CookieError:
                log.warning("Koala login sent an unreadable Set-Cookie")
            if not cookie:
                log.warning("Koala login succeeded without a Set-Cookie")
                raise KoalaError("考拉登录失败：未返回会话")
            session = "; ".join(f"{m.key}={m.coded_value}" for m in cookie.values())
            await self._redis.set(key, session, ex=SESSION_TTL)
            log.info("Logged into Koala at %s as %s", account.base_url, account.username)
            return session

    async def _call(self, method: str, path: str, *, json_body=None, body: bytes | None = None,
                    content_type: str | None = None, raw: bool = False, missing_ok: bool = False):
        """Send one call with the session, logging in again once if Koala says it expired."""
        account = await self._settings()
        if json_body is not None:
            body, content_type = json.dumps(json_body, ensure_ascii=False), "application/json"
        cookie = await self._redis.get(self._session_key(account)) or await self._login(account)
        for attempt in range(2):
            resp = await self._fetch(account, method, path, cookie=cookie, body=body, content_type=content_type)
            location = resp.headers.get("Location", "")
            if not (resp.code == 401 or (300 <= resp.code < 400 and "login" in location.lower())):
                break
            if attempt:
                log.warning("Koala refused %s %s right after a new login (HTTP %s)", method, path, resp.code)
                raise KoalaError("考拉拒绝访问，请检查考拉账号设置")
            cookie = await self._login(account, stale=cookie)
        if resp.code >= 500:
            log.warning("Koala %s %s answered HTTP %s: %r", method, path, resp.code, resp.body[:200])
            raise KoalaError(UNAVAILABLE)
        if missing_ok and resp.code == 404:
            return None
        if raw and resp.code == 200 and "json" not in resp.headers.get("Content-Type", ""):
            return resp
        data = self._json(resp, path)
        if data.get("code") != 0:
            log.warning("Koala %s %s refused: HTTP %s %s", method, path, resp.code, data)
            raise KoalaError(f"考拉返回错误：{data.get('desc') or '未知错误'}")
        if resp.code != 200 or raw:
            log.warning("Koala %s %s answered HTTP %s: %s", method, path, resp.code, data)
            raise KoalaError("考拉返回了无法识别的应答")
        return data

    async def _fetch(self, account: KoalaAccount, method: str, path: str, *, cookie: str | None = None,
                     body=None, content_type: str | None = None) -> HTTPResponse:
        headers = {"User-Agent": "Koala Admin"}
        if cookie:
            headers["Cookie"] = cookie
        if content_type:
            headers["Content-Type"] = content_type
        if "://" in path and not path.startswith(account.base_url + "/"):
            # Never hand the session cookie to another host.
            log.warning("Refusing to fetch %s: not on Koala at %s", path, account.base_url)
            raise KoalaError("图片地址不在考拉系统上")
        url = path if "://" in path else account.base_url + "/" + path.lstrip("/")
        request = HTTPRequest(url, method, headers=headers, body=body, follow_redirects=False,
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        try:
            return await AsyncHTTPClient().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:
            log.warning("Koala %s %s failed: %s", method, url, exc)
            raise KoalaError(UNAVAILABLE) from exc

    @staticmethod
    def _json(resp: HTTPResponse, path: str) -> dict:
        try:
            data = json.loads(resp.body or b"")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            log.warning("Koala %s answered HTTP %s with non-JSON: %r", path, resp.code, (resp.body or b"")[:200])
            raise KoalaError("考拉返回了无法识别的应答")
        return data

    @staticmethod
    def _data(answer: dict) -> dict:
        data = answer.get("data")
        if not isinstance(data, dict) or "id" not in data:
            log.warning("Koala answer without data.id: %s", answer)
            raise KoalaError("考拉返回了无法识别的应答")
        return data


async def find_employee(koala: KoalaClient, name: str, phone: str, missing: str) -> dict:
    """The employee with this name and phone; 404 with `missing` when Koala has none, 502 when Koala fails."""
    try:
        employee = await koala.find_employee(name, phone)
    except KoalaError as exc:
        raise upstream_failed(exc.message) from None
    if employee is None:
        raise not_found(missing)
    return employee
