"""Fake Megvii Koala (考拉) admin API as described in shared/KOALA.md: login, subjects, photos, avatars."""
# `koala_ip` = `127.0.0.1:<port>`. Errors are `{"code": <non-zero>, "desc": "…"}`; a missing or
# expired session answers HTTP 401; validation errors answer HTTP 200 with code -1, so a client has to
# read `code`, not only the status.
from __future__ import annotations

import io
import math
import secrets
import time

from .base import FakeHandler, FakeServer, make_jpeg, serve_forever

CATEGORIES = {"employee": 0, "visitor": 1, "vip": 2}


def _error(desc: str, code: int = -1) -> dict:
    return {"code": code, "desc": desc}


class KoalaHandler(FakeHandler):
    """A Koala call that needs the session cookie from /auth/login."""

    needs_login = True

    async def prepare(self):
        await super().prepare()
        if not self._finished and self.needs_login and self.get_cookie("session") not in self.fake.sessions:
            self.reply(_error("未登录"), 401)


class LoginHandler(KoalaHandler):
    """Logs in with username and password; only Koala's own admin client is let in."""

    needs_login = False

    def post(self):
        fake: FakeKoala = self.fake
        if "Koala Admin" not in self.request.headers.get("User-Agent", ""):
            return self.reply(_error("非法客户端", 1))
        body = self.json_body()
        if not isinstance(body, dict):  # some Koala clients post a form instead of JSON
            body = {k: self.get_body_argument(k, "") for k in ("username", "password")}
        if body.get("username") != fake.username or body.get("password") != fake.password:
            return self.reply(_error("用户名或密码错误"))
        session = secrets.token_hex(16)
        fake.sessions.add(session)
        fake.logins += 1
        self.set_cookie("session", session, path="/", httponly=True)
        self.reply({"code": 0, "data": {"id": 1, "username": fake.username, "company_id": 1,
                                        "role_id": 1, "permission": []}})


class SubjectListHandler(KoalaHandler):
    """Pages through employees or visitors, optionally filtered by part of the name."""

    def get(self):
        category = self.get_argument("category", "employee")
        if category not in CATEGORIES:
            return self.reply(_error("category 参数错误"))
        try:
            page = max(1, int(self.get_argument("page", "1")))
            size = max(1, int(self.get_argument("size", "10")))
        except ValueError:
            return self.reply(_error("page 或 size 参数错误"))
        name = self.get_argument("name", "").strip().lower()
        found = [s for _, s in sorted(self.fake.subjects.items())
                 if s["subject_type"] == CATEGORIES[category] and name in s["name"].lower()]
        self.reply({"code": 0, "data": found[(page - 1) * size:page * size],
                    "page": {"count": len(found), "current": page, "size": size,
                             "total": math.ceil(len(found) / size)}})


class SubjectCreateHandler(KoalaHandler):
    """Creates a subject (the system only creates visitors, subject_type 1)."""

    def post(self):
        fake: FakeKoala = self.fake
        if fake._create_budget is not None:
            if fake._create_budget <= 0:
                return self.reply(_error("服务器内部错误"), 500)
            fake._create_budget -= 1
        body = self.json_body()
        if not isinstance(body, dict):
            return self.reply(_error("请求格式错误，需要 JSON"))
        if body.get("subject_type") not in (0, 1, 2) or isinstance(body.get("subject_type"), bool):
            return self.reply(_error("subject_type 参数错误"))
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            return self.reply(_error("姓名不能为空"))
        for key in ("start_time", "end_time"):
            value = body.get(key)
            if (value is not None and (not isinstance(value, int) or isinstance(value, bool))) or \
                    (value is None and body["subject_type"] == 1):
                return self.reply(_error(f"{key} 必须是整数时间戳"))
        if body["subject_type"] == 1 and body["end_time"] <= body["start_time"]:
            return self.reply(_error("结束时间必须晚于开始时间"))
        try:  # ids may come as numbers or digit strings
            photo_ids = [int(pid) for pid in body.get("photo_ids") or []]
        except (TypeError, ValueError):
            photo_ids = [0]
        if any(pid not in fake.photos for pid in photo_ids):
            return self.reply(_error("照片不存在"))
        fields = {k: body[k] for k in ("phone", "department", "title", "start_time", "end_time", "interviewee",
                                        "come_from", "purpose", "remark", "email", "description") if k in body}
        subject = fake._add_subject(body["subject_type"], body["name"],
                                    photos=[fake.photos[pid] for pid in photo_ids], **fields)
        self.reply({"code": 0, "data": subject})


class SubjectHandler(KoalaHandler):
    """Reads or deletes one subject by id."""

    def get(self, subject_id):
        subject = self.fake.subjects.get(int(subject_id))
        if subject is None:
            return self.reply(_error("subject not found"), 404)
        self.reply({"code": 0, "data": subject})

    def delete(self, subject_id):
        if self.fake.subjects.pop(int(subject_id), None) is None:
            return self.reply(_error("subject not found"), 404)
        self.reply({"code": 0})


class PhotoHandler(KoalaHandler):
    """Uploads a face photo (multipart field `photo`), to be passed as `photo_ids` on create."""

    def post(self):
        from PIL import Image

        files = self.request.files.get("photo")
        if not files:
            return self.reply(_error("缺少照片 photo"))
        data = files[0].body
        try:
            Image.open(io.BytesIO(data)).verify()
        except Exception:  # Pillow raises many kinds for garbage; all mean "not an image"
            return self.reply(_error("照片格式错误"))
        photo = self.fake._store_photo(data, "photo")
        self.reply({"code": 0, "data": photo})


class StaticHandler(KoalaHandler):
    """Serves uploaded avatars and photos to a logged-in client."""

    def get(self, path):
        data = self.fake.files.get("/static/upload/" + path)
        if data is None:
            return self.reply(_error("文件不存在"), 404)
        self.set_header("Content-Type", "image/jpeg")
        self.finish(data)


class FakeKoala(FakeServer):
    """Koala's admin HTTP API with an in-memory list of subjects (employees and visitors)."""

    name = "koala"
    default_port = 9002

    def __init__(self, username: str = "admin@megvii.com", password: str = "koala123"):
        super().__init__()
        self.username, self.password = username, password
        self.sessions: set[str] = set()
        self.logins = 0
        self.subjects: dict[int, dict] = {}
        self.photos: dict[int, dict] = {}
        self.files: dict[str, bytes] = {}  # path on the Koala host -> JPEG bytes
        self._next_subject_id = 1
        self._next_photo_id = 1
        self._create_budget: int | None = None

    def routes(self):
        return [
            (r"/auth/login", LoginHandler),
            (r"/mobile-admin/subjects/list", SubjectListHandler),
            (r"/subject", SubjectCreateHandler),
            (r"/subject/photo", PhotoHandler),
            (r"/subject/(\d+)", SubjectHandler),
            (r"/static/upload/(.+)", StaticHandler),
        ]

    def error_body(self, status, message):
        return _error(message)

    def _store_photo(self, data: bytes, kind: str) -> dict:
        url = f"/static/upload/{kind}/{secrets.token_hex(12)}.jpg"
        self.files[url] = data
        photo = {"id": self._next_photo_id, "url": url}
        self.photos[photo["id"]] = photo
        self._next_photo_id += 1
        return photo

    def _add_subject(self, subject_type: int, name: str, photos: list, **fields) -> dict:
        subject = {"id": self._next_subject_id, "subject_type": subject_type, "name": name, "phone": "",
                   "department": "", "title": "", "avatar": photos[0]["url"] if photos else "",
                   "photos": photos, "start_time": None, "end_time": None, "interviewee": "",
                   "come_from": "", "purpose": 0, "remark": "", "email": "", "description": "",
                   "create_time": int(time.time())}
        subject.update(fields)
        self.subjects[subject["id"]] = subject
        self._next_subject_id += 1
        return subject

    def add_employee(self, name: str, phone: str, department: str = "", title: str = "",
                     avatar_bytes: bytes | None = None) -> dict:
        """Add an employee (subject_type 0) with an avatar (a generated JPEG by default)."""
        photo = self._store_photo(avatar_bytes or make_jpeg(name + phone), "avatar")
        return self._add_subject(0, name, [photo], phone=phone, department=department, title=title)

    def visitors(self) -> list[dict]:
        """The visitor subjects (subject_type 1), oldest first."""
        return [s for _, s in sorted(self.subjects.items()) if s["subject_type"] == 1]

    def employees(self) -> list[dict]:
        """The employee subjects (subject_type 0), oldest first."""
        return [s for _, s in sorted(self.subjects.items()) if s["subject_type"] == 0]

    def avatar_bytes(self, subject: dict) -> bytes:
        """The image behind a subject's `avatar` path."""
        return self.files[subject["avatar"]]

    def expire_sessions(self) -> None:
        """Log every client out: their next calls answer HTTP 401 until they log in again."""
        self.sessions.clear()

    def fail_create_after(self, k: int) -> None:
        """Let `k` more POST /subject succeed, then answer HTTP 500 to each further one until reset()."""
        self._create_budget = k

    def reset(self) -> None:
        """Forget requests, failures, delay and the login count; subjects and sessions stay."""
        super().reset()
        self.logins = 0
        self._create_budget = None


if __name__ == "__main__":
    demo = FakeKoala()
    demo.add_employee("张三", "13800138001", department="研发部", title="软件工程师")
    demo.add_employee("李四", "13800138002", department="行政部", title="前台")
    demo.add_employee("王小明", "13800138003", department="市场部", title="经理")
    serve_forever(demo)
