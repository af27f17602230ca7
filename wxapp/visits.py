"""Visit records: applications and invitations, lists, authorization, kiosk sign-in, deletion."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
from typing import AsyncIterator, Callable
from zoneinfo import ZoneInfo

from .errors import ApiError, bad_request, conflict, not_found, upstream_failed
from .gate import GateCache
from .images import Images, decode_photo
from .koala import KoalaClient, KoalaError
from .outbox import Outbox
from .paging import page_of
from .security import new_token
from .storage import Storage
from .system_settings import SystemSettings

log = logging.getLogger(__name__)

PURPOSES = {0: "其它", 1: "面试", 2: "商务", 3: "亲友", 4: "快递送货"}
SORT = [("start_time", -1), ("_id", -1)]
SIGNIN_LOCK_TTL = 60


def epoch(value, tz: ZoneInfo) -> int:
    """A request time as Unix seconds: ints pass, naive datetimes are read in `tz`."""
    if isinstance(value, datetime.datetime):
        return int(value.replace(tzinfo=tz).timestamp())
    return int(value)


def day_bounds(day: datetime.date, tz: ZoneInfo) -> tuple[int, int]:
    """When a calendar day begins and ends in `tz`, as Unix seconds."""
    start = datetime.datetime.combine(day, datetime.time(), tz)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), tz)
    return int(start.timestamp()), int(end.timestamp())


def _equals(field: str, value) -> Callable[[dict], bool]:
    return lambda record: record.get(field) == value


def _contains(field: str, text: str) -> Callable[[dict], bool]:
    needle = text.casefold()
    return lambda record: needle in record.get(field, "").casefold()


@dataclasses.dataclass
class RecordQuery:
    """A records filter split in two: `index`, the predicates one index serves completely, sent to
    MongoDB; `checks`, the rest, applied to the records the index yields. Every list is driven by a
    selective index (a phone, or the visit time), so its cost follows the matches, not the collection."""

    index: dict
    checks: list
    # Visits must end after this time: with the longest visit ever stored, it also bounds start_time.
    ends_after: int | None = None

    def matches(self, record: dict) -> bool:
        """Whether a record passes every check."""
        return all(check(record) for check in self.checks)



class Visits:
    """The rules of CONTRACT §5 for records, independent of HTTP."""

    def __init__(self, storage: Storage, redis, koala: KoalaClient, images: Images, outbox: Outbox,
                 gate_cache: GateCache, settings: SystemSettings, clock: Callable[[], float], tz: ZoneInfo):
        self.storage = storage
        self.redis = redis
        self.koala = koala
        self.images = images
        self.outbox = outbox
        self.gate_cache = gate_cache
        self.settings = settings
        self.clock = clock
        self.tz = tz

    # --- applications ----------------------------------------------------------------------

    async def apply(self, binding: dict, values: dict) -> dict:
        """A visitor's application (pending) or an employee's invitation (authorized).

        Everything is checked (photos decoded, the interviewee found) before anything is stored,
        so a refused application leaves no trace."""
        start, end = epoch(values["start_time"], self.tz), epoch(values["end_time"], self.tz)
        if end <= start:
            raise bad_request("参数 end_time 必须晚于 start_time")
        if end <= self.clock():
            raise bad_request("参数 end_time 必须是将来的时间")
        own = binding["phone"]
        if binding["type"] == "visitor":
            if values["proposer"] != own or values["phone"] != own:
                raise ApiError(403, "访客申请时，申请人和访客手机号必须是本人绑定的手机号")
        elif values["proposer"] != own or values["interviewee_phone"] != own:
            raise ApiError(403, "员工邀约时，申请人和被访人手机号必须是本人绑定的手机号")
        people = [values, *values.get("retinues", [])]
        for i, person in enumerate(people):
            self._check_photo(person.get("photo"), "photo" if i == 0 else f"retinues[{i - 1}].photo")
        if binding["type"] == "visitor":
            interviewee, department = await self._interviewee(values["interviewee"], values["interviewee_phone"])
            is_auth, event = 0, "approval_reminder_to_employee"
        else:
            interviewee, department = binding.get("name") or values["interviewee"], binding.get("department", "")
            is_auth, event = 1, "approval_pass_to_visitor"
        photos: list[str] = []
        try:
            for person in people:
                photos.append(await self._save_photo(person.get("photo")))
            retinues = [{"name": item["name"], "phone": item["phone"], "photo": photo, "koala_id": 0, "token": ""}
                        for item, photo in zip(values.get("retinues", []), photos[1:])]
            record = {
                "_id": await self.storage.next_id("records"),
                "subject_type": 1, "name": values["name"], "phone": values["phone"],
                "purpose": values["purpose"], "remark": values["remark"], "come_from": values["come_from"],
                "proposer": values["proposer"], "interviewee": interviewee,
                "interviewee_phone": values["interviewee_phone"], "department": department,
                "start_time": start, "end_time": end, "photo": photos[0], "koala_id": 0, "token": "",
                "retinues": retinues, "tokens": [], "is_auth": is_auth, "signin_time": 0,
                "phones": list(dict.fromkeys([values["phone"], *(r["phone"] for r in retinues)])),
                "parties": list(dict.fromkeys([values["proposer"], values["phone"]])),
                "created_by": binding["_id"], "create_time": int(self.clock()),
                "pending_events": [event],
            }
            # First: lists rely on no stored visit being longer than this (see index_query).
            await self.storage.counters.update_one(
                {"_id": "longest_visit"}, {"$max": {"seconds": end - start}}, upsert=True)
            await self.storage.records.insert_one(record)
        except Exception:
            # Not stored: the photos go too (or, if even that fails, the image sweep takes them).
            try:
                await self.images.delete(photos)
            except Exception:
                log.warning("photos %s of an application that failed are left to the image sweep", photos)
            raise
        await self.outbox.materialize(record["_id"])
        record["pending_events"] = []
        return record

    async def _interviewee(self, name: str, phone: str) -> tuple[str, str]:
        """(name, department) of the employee whose phone this is: a bound employee first, else the
        one in Koala. The name the visitor typed only helps find them; the record keeps the real one."""
        bound = await self.storage.bindings.find_one({"type": "employee", "phone": phone})
        if bound is not None:
            return bound.get("name") or name, bound.get("department", "")
        try:
            employee = await self.koala.find_employee_by_phone(phone, name)
        except KoalaError as exc:
            raise upstream_failed(exc.message) from None
        if employee is None:
            raise not_found("未找到被访员工，请确认被访人手机号")
        return (employee.get("name") or "").strip() or name, employee.get("department") or ""

    @staticmethod
    def _check_photo(value: str | None, field: str) -> None:
        if value:
            try:
                decode_photo(value)
            except ValueError as exc:
                raise bad_request(f"参数 {field} {exc}") from None

    async def _save_photo(self, value: str | None) -> str:
        # Decoded again rather than kept from the check: one photo in memory at a time, not 21.
        return await self.images.save(decode_photo(value)) if value else ""

    async def sweep_images(self) -> int:
        """Remove stored images that no record or binding names (left behind by a failure midway)."""
        return await self.images.sweep(self._named_images)

    async def _named_images(self, names: list[str]) -> set[str]:
        named: set[str] = set()
        for field in ("photo", "retinues.photo"):
            async for record in self.storage.records.find({field: {"$in": names}}, {"photo": 1, "retinues.photo": 1}):
                named.add(record.get("photo", ""))
                named.update(person.get("photo", "") for person in record.get("retinues", []))
        async for binding in self.storage.bindings.find({"avatar": {"$in": names}}, {"avatar": 1}):
            named.add(binding["avatar"])
        return named

    # --- lists -------------------------------------------------------------------------------

    async def ensure_longest_visit(self) -> None:
        """Work the longest visit out of the stored records when nothing has recorded it yet
        (`index_query` relies on it never being shorter than a stored visit)."""
        if await self.storage.counters.find_one({"_id": "longest_visit"}) is not None:
            return
        result = await self.storage.records.aggregate([
            {"$group": {"_id": None, "seconds": {"$max": {"$subtract": ["$end_time", "$start_time"]}}}},
        ]).to_list(1)
        if result and result[0]["seconds"] is not None:
            await self.storage.counters.update_one(
                {"_id": "longest_visit"}, {"$max": {"seconds": result[0]["seconds"]}}, upsert=True)

    async def index_query(self, query: "RecordQuery") -> dict:
        """What MongoDB is asked: the indexed predicates, the start of the visit bounded too when
        visits must end after a time (they began at most the longest visit earlier), so the index
        range stays as narrow as the window asked for, however many older visits there are."""
        index = dict(query.index)
        if query.ends_after is not None:
            longest = await self.storage.counters.find_one({"_id": "longest_visit"})
            if longest is not None:
                bound = {"$gt": query.ends_after - longest["seconds"] - 1}
                index["start_time"] = {**index.get("start_time", {}), **bound}
        return index

    async def find(self, query: "RecordQuery", page: int, size: int) -> tuple[list[dict], dict]:
        """One page of records matching `query`, newest visit first."""
        skip = (page - 1) * size
        if not query.checks:
            index = await self.index_query(query)
            count = await self.storage.records.count_documents(index)
            cursor = self.storage.records.find(index).sort(SORT).skip(skip).limit(size)
            return await cursor.to_list(size), page_of(count, page, size)
        count, items = 0, []
        async for record in self.each(query):
            if skip <= count < skip + size:
                items.append(record)
            count += 1
        return items, page_of(count, page, size)

    async def each(self, query: "RecordQuery", fields: dict | None = None) -> AsyncIterator[dict]:
        """Every record matching `query` (only `fields` of it, when given), newest visit first,
        read in batches."""
        index = await self.index_query(query)
        async for record in self.storage.records.find(index, fields).sort(SORT).batch_size(500):
            if query.matches(record):
                yield record

    def filters(self, args: dict, *, party: str = "") -> "RecordQuery":
        """The seed's filters (CONTRACT §5): names as case-insensitive substrings, phones exact,
        times selecting visits that overlap [start_time, end_time]; `party` limits to one person's records."""
        equal = {name: args[name] for name in ("interviewee_phone", "phone", "proposer") if args.get(name)}
        if party:
            equal = {"parties": party, **equal}
        checks: list[Callable[[dict], bool]] = []
        index: dict = {}
        if equal:
            field = next(iter(equal))
            index[field] = equal.pop(field)
            checks += [_equals(name, value) for name, value in equal.items()]
        if args.get("end_time") is not None:
            index["start_time"] = {"$lt": epoch(args["end_time"], self.tz)}
        if args.get("start_time") is not None:
            after = epoch(args["start_time"], self.tz)
            checks.append(lambda r: r["end_time"] > after)
            ends_after = after
        else:
            ends_after = None
        if args.get("is_auth") is not None:
            checks.append(_equals("is_auth", args["is_auth"]))
        for name in ("name", "interviewee"):
            if args.get(name):
                checks.append(_contains(name, args[name]))
        return RecordQuery(index, checks, ends_after)

    async def get(self, record_id: int) -> dict:
        """A record, or 404."""
        record = await self.storage.records.find_one({"_id": record_id})
        if record is None:
            raise not_found("访客记录不存在")
        return record

    # --- authorization ------------------------------------------------------------------------

    async def authorize(self, record_id: int, employee_phone: str | None) -> dict:
        """Authorize a record (the interviewee, or an admin when `employee_phone` is None)."""
        record = await self.get(record_id)
        if employee_phone is not None and record["interviewee_phone"] != employee_phone:
            raise ApiError(403, "只有被访员工本人可以授权该访客")
        if record["is_auth"] == 1:
            return record
        if record["end_time"] <= self.clock():
            raise conflict("来访时间已过，无法授权")
        updated = await self.storage.records.find_one_and_update(
            {"_id": record_id, "is_auth": 0},
            {"$set": {"is_auth": 1}, "$push": {"pending_events": "approval_pass_to_visitor"}},
            return_document=True,
        )
        if updated is None:  # authorized by someone else at the same moment, or deleted
            return await self.get(record_id)
        await self.outbox.materialize(record_id)
        return updated

    # --- sign-in -----------------------------------------------------------------------------

    def _today(self) -> tuple[int, int]:
        return day_bounds(datetime.datetime.fromtimestamp(self.clock(), self.tz).date(), self.tz)

    async def _todays_record(self, phone: str) -> dict:
        day_start, day_end = self._today()
        candidates = await self.storage.records.find({"phones": phone, "start_time": {"$lt": day_end}}).to_list(None)
        records = [r for r in candidates if r["is_auth"] == 1 and r["end_time"] > day_start]
        if not records:
            raise not_found("今天没有已审批的预约")
        now = self.clock()
        current = [r for r in records if r["start_time"] <= now < r["end_time"]]
        return min(current or records, key=lambda r: (r["start_time"], r["_id"]))

    async def signin(self, phone: str) -> dict:
        """Sign the visit in: every person into Koala, a QR token each; repeating it changes nothing."""
        record = await self._todays_record(phone)
        if record["signin_time"]:
            return record
        lock = f"lock:signin:{record['_id']}"
        owner = new_token(8)
        deadline = self.clock() + SIGNIN_LOCK_TTL
        while not await self.redis.set(lock, owner, nx=True, ex=SIGNIN_LOCK_TTL):
            # Another kiosk or process is signing this record in: wait for its result.
            await asyncio.sleep(0.1)
            record = await self.get(record["_id"])
            if record["signin_time"]:
                return record
            if self.clock() > deadline:
                raise ApiError(409, "该预约正在签到，请稍后再试")
        try:
            record = await self.get(record["_id"])
            if record["signin_time"]:
                return record
            return await self._sign_in_locked(record)
        finally:
            if await self.redis.get(lock) == owner:
                await self.redis.delete(lock)

    async def _sign_in_locked(self, record: dict) -> dict:
        people = [("", record)] + [(f"retinues.{i}.", p) for i, p in enumerate(record["retinues"])]
        for prefix, person in people:
            if person.get("koala_id"):
                continue  # created by an earlier attempt that failed later: reuse it
            photo = (await self.images.get(person["photo"]))[0] if person.get("photo") else None
            try:
                koala_id = await self.koala.create_visitor(
                    name=person["name"], phone=person["phone"], start_time=record["start_time"],
                    end_time=record["end_time"], interviewee=record["interviewee"],
                    come_from=record["come_from"], purpose=record["purpose"], remark=record["remark"],
                    photo=photo,
                )
            except KoalaError as exc:
                log.warning("sign-in of record %s stopped: %s", record["_id"], exc.message)
                raise upstream_failed(f"写入考拉系统失败：{exc.message}") from None
            person["koala_id"] = koala_id
            await self.storage.records.update_one({"_id": record["_id"]}, {"$set": {prefix + "koala_id": koala_id}})
        tokens = {"token": new_token(24)}
        for i in range(len(record["retinues"])):
            tokens[f"retinues.{i}.token"] = new_token(24)
        now = int(self.clock())
        updated = await self.storage.records.find_one_and_update(
            {"_id": record["_id"], "signin_time": 0},
            {"$set": {**tokens, "tokens": list(tokens.values()), "signin_time": now},
             "$push": {"pending_events": {"$each": ["signin_to_visitor", "visitor_signin_to_employee"]}}},
            return_document=True,
        )
        if updated is None:
            return await self.get(record["_id"])
        await self.gate_cache.publish(updated)
        await self.outbox.materialize(updated["_id"])
        return updated

    # --- deletion ----------------------------------------------------------------------------

    async def delete(self, record_id: int) -> None:
        """Delete a record: its QR codes stop at once, its Koala subjects go (later, if Koala is down)."""
        record = await self.storage.records.find_one_and_delete({"_id": record_id})
        if record is None:
            raise not_found("访客记录不存在")
        await self.gate_cache.revoke(record)
        await self.storage.outbox.update_many(
            {"record_id": record_id, "status": "pending"}, {"$set": {"status": "cancelled"}}
        )
        koala_ids = [p["koala_id"] for p in [record, *record["retinues"]] if p.get("koala_id")]
        await self.images.delete([record.get("photo")] + [p.get("photo") for p in record["retinues"]])
        if koala_ids:
            await self.storage.koala_cleanup.insert_one(
                {"_id": f"record:{record_id}", "subject_ids": koala_ids, "attempts": 0, "created_at": self.clock()}
            )
            await self.remove_koala_subjects()

    async def remove_koala_subjects(self) -> int:
        """Delete Koala subjects of deleted records; what fails stays queued for the next try."""
        done = 0
        async for job in self.storage.koala_cleanup.find({}):
            remaining = []
            for subject_id in job["subject_ids"]:
                try:
                    await self.koala.delete_subject(subject_id)
                    done += 1
                except KoalaError as exc:
                    log.warning("Koala subject %s not deleted yet: %s", subject_id, exc.message)
                    remaining.append(subject_id)
            if remaining:
                await self.storage.koala_cleanup.update_one(
                    {"_id": job["_id"]}, {"$set": {"subject_ids": remaining}, "$inc": {"attempts": 1}})
            else:
                await self.storage.koala_cleanup.delete_one({"_id": job["_id"]})
        return done

    # --- presentation ------------------------------------------------------------------------

    @staticmethod
    def visible_to(record: dict, binding: dict) -> bool:
        """Whether a bound user may see a record: theirs as visitor, proposer or interviewee."""
        phone = binding["phone"]
        if binding["type"] == "employee":
            return phone in (record["interviewee_phone"], record["proposer"])
        return phone in (record["phone"], record["proposer"])

    def status(self, record: dict) -> str:
        """待审批, 已授权, 已签到 or 已过期, as people read a record at a glance."""
        if record["signin_time"]:
            return "已签到"
        if record["end_time"] <= self.clock():
            return "已过期"
        return "已授权" if record["is_auth"] else "待审批"

    def present(self, record: dict, cloud_url: str) -> dict:
        """A record as the seed's responses show it."""
        signed = bool(record["signin_time"])

        def person(p: dict) -> dict:
            token = p.get("token", "") if signed else ""
            return {
                "subject_id": p.get("koala_id", 0) if signed else 0,
                "name": p["name"], "phone": p["phone"],
                "photo": f"{cloud_url}/avatar/{p['photo']}" if p.get("photo") else "",
                "qrcode": json.dumps({"id": record["_id"], "qrcode": token}) if token else "",
                "qrcode_img_url": f"{cloud_url}/qrcode/{token}.png" if token else "",
            }

        main = person(record)
        return {
            "id": record["_id"], **main, "subject_type": 1,
            "purpose": record["purpose"], "remark": record["remark"], "come_from": record["come_from"],
            "proposer": record["proposer"], "interviewee": record["interviewee"],
            "interviewee_phone": record["interviewee_phone"], "department": record.get("department", ""),
            "start_time": record["start_time"], "end_time": record["end_time"], "group_ids": "",
            "is_auth": record["is_auth"], "signin_time": record["signin_time"],
            "create_time": record.get("create_time", 0),
            "retinues": [person(p) for p in record["retinues"]],
        }
