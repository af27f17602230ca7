"""Visit records: applications and invitations, lists, authorization, kiosk sign-in, deletion."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import math
from typing import AsyncIterator, Callable
from zoneinfo import ZoneInfo

from .bindings import Bindings
from .errors import ApiError, bad_request, conflict, not_found, upstream_failed
from .gate import NO_PERMISSION, GateCache
from .lifecycle import Transition, status_of
from . import lifecycle
from .images import Images, decode_photo
from .koala import KoalaClient, KoalaError, KoalaNotConfigured
from .outbox import Outbox
from .qrcodes import qr_content
from .paging import page_of, windows
from .revocation import Revocations
from .security import new_token
from .storage import ASCENDING, Storage
from .system_settings import SystemSettings

log = logging.getLogger(__name__)

PURPOSES = {0: "其它", 1: "面试", 2: "商务", 3: "亲友", 4: "快递送货"}
SORT = [("start_time", -1), ("_id", -1)]
# A list without a selective filter (a phone, a name) walks the start_time index newest first, one
# bounded range of start times at a time: SecantusDB reads the whole range a query names before it
# applies a limit (an open-ended range sorted in index order, limit 20, examined 60,000 of 100,000
# records), so only a bounded range has a bounded cost. A window holds about WINDOW_RECORDS.
WINDOW_RECORDS = 500
FIRST_WINDOW = 3600  # seconds; later windows widen or narrow to hold about WINDOW_RECORDS
# What the checks of a list without a selective filter read (see RecordQuery): the page itself is
# read whole by _id once found.
_CHECKED_FIELDS = {"start_time": 1, "end_time": 1, "is_auth": 1, "status": 1, "signin_time": 1}
# ... and what a selective list's checks read besides (names as substrings, the other phones).
_MATCHED_FIELDS = {**_CHECKED_FIELDS, "name": 1, "interviewee": 1, "phone": 1, "proposer": 1, "interviewee_phone": 1,
                   "parties": 1}
SIGNIN_LOCK_TTL = 60
# Extends the sign-in lock only for its holder, so a sign-in slower than the TTL keeps it.
_HOLD_LOCK = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) "
              "end return 0")
# How long a Koala subject of ours that no record owns is left alone, in case the sign-in that
# created it is about to record it (far longer than one Koala create may take).
KOALA_ORPHAN_GRACE = 600


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


# The stored statuses of records ever approved (is_auth 1) and never approved (is_auth 0): a
# decline or a cancellation may come before or after the approval.
_AUTHORIZED = {lifecycle.APPROVED, lifecycle.SIGNED_IN, lifecycle.CHECKED_OUT, lifecycle.NO_SHOW,
               lifecycle.DECLINED, lifecycle.CANCELLED}
_UNAUTHORIZED = {lifecycle.PENDING, lifecycle.EXPIRED, lifecycle.DECLINED, lifecycle.CANCELLED}


def _newest_first(record: dict) -> tuple:
    """The key that puts records in SORT's order."""
    return -record["start_time"], -record["_id"]


def _equals(field: str, value) -> Callable[[dict], bool]:
    return lambda record: record.get(field) == value


def _contains(field: str, text: str) -> Callable[[dict], bool]:
    needle = text.casefold()
    return lambda record: needle in record.get(field, "").casefold()


# Substring search on names through an index: each record lists, in `grams`, every character and
# every pair of adjacent characters of its visitor's name and its interviewee's name (Chinese names
# are 2–4 characters), each tagged with the field. Any substring of one or more characters contains
# one of them, so one indexed equality narrows the search to the records that may match.
GRAM_FIELDS = {"name": "n", "interviewee": "i"}


def _grams_of(tag: str, text: str) -> set[str]:
    text = text.casefold()
    return {f"{tag}:{c}" for c in text} | {f"{tag}:{text[i:i + 2]}" for i in range(len(text) - 1)}


def search_grams(record: dict) -> list[str]:
    """The `grams` of a record (kept current on every write of a name)."""
    grams: set[str] = set()
    for field, tag in GRAM_FIELDS.items():
        grams |= _grams_of(tag, record.get(field) or "")
    return sorted(grams)


def gram_for(field: str, text: str) -> str:
    """The one gram an index lookup uses for a substring search: its first pair of characters (or
    its only character)."""
    text = text.casefold()
    return f"{GRAM_FIELDS[field]}:{text[:2]}"


@dataclasses.dataclass
class RecordQuery:
    """A records filter split in two: `index`, the predicates one index serves completely, sent to
    MongoDB; `checks`, the rest, applied to the records the index yields. A list is driven by a
    selective index (a phone, a name's gram) or walks the visit time's index in bounded windows
    (Visits._walk), so no query reads more than the matches or one window."""

    index: dict
    checks: list
    # Visits must end after this time: with the longest visit ever stored, it also bounds start_time.
    ends_after: int | None = None
    # The stored statuses a match may have, when the filters rule some out: a walk of the start
    # times (Visits._walk) then reads those through the status index, not every record.
    statuses: tuple[str, ...] | None = None

    def matches(self, record: dict) -> bool:
        """Whether a record passes every check."""
        return all(check(record) for check in self.checks)



class Visits:
    """The rules of CONTRACT §5 for records, independent of HTTP."""

    def __init__(self, storage: Storage, redis, koala: KoalaClient, images: Images, outbox: Outbox,
                 bindings: Bindings, gate_cache: GateCache, revocations: Revocations, settings: SystemSettings,
                 clock: Callable[[], float], tz: ZoneInfo):
        self.storage = storage
        self.redis = redis
        self.koala = koala
        self.images = images
        self.outbox = outbox
        self.bindings = bindings
        self.gate_cache = gate_cache
        self.revocations = revocations
        self._exits: set[asyncio.Task] = set()
        self.settings = settings
        self.clock = clock
        self.tz = tz
        self.window_records = WINDOW_RECORDS

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
            is_auth, status, event = 0, lifecycle.PENDING, "approval_reminder_to_employee"
        else:
            interviewee, department = binding.get("name") or values["interviewee"], binding.get("department", "")
            is_auth, status, event = 1, lifecycle.APPROVED, "approval_pass_to_visitor"
        photos: list[str] = []
        counted = False
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
                "retinues": retinues, "tokens": [], "is_auth": is_auth, "status": status, "signin_time": 0,
                "phones": list(dict.fromkeys([values["phone"], *(r["phone"] for r in retinues)])),
                "parties": list(dict.fromkeys([values["proposer"], values["phone"]])),
                "created_by": binding["_id"], "create_time": int(self.clock()),
                "pending_events": [event],
            }
            # First: lists rely on no stored visit being longer than this (see index_query), on the
            # stored start times lying within [first_start, last_start] and on the count (see _walk).
            await self.storage.counters.update_one(
                {"_id": "longest_visit"},
                {"$max": {"seconds": end - start, "last_start": start}, "$min": {"first_start": start},
                 "$inc": {"records": 1}}, upsert=True)
            counted = True
            record["grams"] = search_grams(record)
            await self.storage.records.insert_one(record)
        except Exception:
            if counted:
                await self._count_records(-1)
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
        bound = await self.bindings.by_phone("employee", phone)
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
            for record in await self.storage.records.find({field: {"$in": names}}, {"photo": 1, "retinues.photo": 1}):
                named.add(record.get("photo", ""))
                named.update(person.get("photo", "") for person in record.get("retinues", []))
        return named | await self.bindings.avatars_among(names)

    # --- lists -------------------------------------------------------------------------------

    async def ensure_longest_visit(self) -> None:
        """Work out of the stored records what `apply` keeps for the lists (the longest visit, the
        first and last start time, how many records there are) when nothing has recorded it yet: a
        database from before it was kept (`index_query` and `_walk` rely on it)."""
        known = await self.storage.counters.find_one({"_id": "longest_visit"})
        if known is not None and known.get("span_known"):
            return
        result = await self.storage.records.aggregate([
            {"$group": {"_id": None, "seconds": {"$max": {"$subtract": ["$end_time", "$start_time"]}},
                        "first_start": {"$min": "$start_time"}, "last_start": {"$max": "$start_time"},
                        "records": {"$sum": 1}}},
        ])
        if result and result[0]["seconds"] is not None:
            found = result[0]
            await self.storage.counters.update_one(
                {"_id": "longest_visit"},
                {"$max": {"seconds": found["seconds"], "last_start": found["last_start"]},
                 "$min": {"first_start": found["first_start"]},
                 "$set": {"records": found["records"], "span_known": True}}, upsert=True)

    async def _count_records(self, change: int) -> None:
        """Keep the count of stored records (the `count` of an unfiltered list) current."""
        try:
            await self.storage.counters.update_one({"_id": "longest_visit"}, {"$inc": {"records": change}})
        except Exception:  # a count one off is better than a failure here; a restart keeps it
            log.exception("the count of records was not changed by %s", change)

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

    @staticmethod
    def _selective(index: dict) -> bool:
        """Whether an index query names a phone, a party or a name gram: the records of one person or
        one name, read in one query; otherwise the list walks the start_time index (see _walk)."""
        return any(field != "start_time" for field in index)

    async def find(self, query: "RecordQuery", page: int, size: int) -> tuple[list[dict], dict]:
        """One page of records matching `query`, newest visit first."""
        skip = (page - 1) * size
        index = await self.index_query(query)
        if not self._selective(index):
            return await self._walk_page(query, index, skip, size, page)
        if not query.checks:
            count = await self.storage.records.count(index)
            items = await self.storage.records.find(index, sort=SORT, skip=skip, limit=size)
            return items, page_of(count, page, size)
        # Matched on the few fields the checks read; only the page's records are read whole.
        count, ids = 0, []
        async for record in self.each(query, _MATCHED_FIELDS):
            if skip <= count < skip + size:
                ids.append(record["_id"])
            count += 1
        return await self.storage.records.by_ids(ids), page_of(count, page, size)

    async def _walk_page(self, query: "RecordQuery", index: dict, skip: int, size: int,
                         page: int) -> tuple[list[dict], dict]:
        """`find` without a selective filter: the windows of _walk, read with only the fields the
        checks need; the page's records are then read whole by _id. Every record is counted unless
        nothing filters the list: then the count kept by `apply` is the count, and the walk stops
        at the end of the page."""
        unfiltered = not query.checks and "start_time" not in index
        total = (await self._span() or {}).get("records", 0) if unfiltered else None
        count, ids = 0, []
        async for window in self._walk(index, query.statuses, _CHECKED_FIELDS):
            for record in window:
                if query.matches(record):
                    if skip <= count < skip + size:
                        ids.append(record["_id"])
                    count += 1
            if unfiltered and count >= skip + size:
                break
        count = max(count, total) if unfiltered else count
        return await self.storage.records.by_ids(ids), page_of(count, page, size)

    async def _span(self) -> dict | None:
        """What `apply` keeps for the lists (first_start, last_start, records), None when no record
        was ever stored."""
        span = await self.storage.counters.find_one({"_id": "longest_visit"})
        if span is None or not span.get("span_known"):  # records stored before it was kept
            await self.ensure_longest_visit()
            span = await self.storage.counters.find_one({"_id": "longest_visit"})
        return span if span is not None and "first_start" in span else None

    async def _walk(self, index: dict, statuses: tuple[str, ...] | None, fields: dict | None = None,
                    ahead: bool = False) -> AsyncIterator[list[dict]]:
        """The records `index` selects (it may bound start_time, nothing else), of `statuses` when
        given, newest visit first, in windows: each one bounded range of start times holding about
        WINDOW_RECORDS of them, read through the start_time index (or the status index, one query
        per status), so no query reads more than one window and other queries (and the event loop)
        get their turn between two windows. A window is put in order here: SecantusDB sorts in
        memory even in an index's order (half as slow again as the read itself), and a window is
        small."""
        span = await self._span()
        if span is None:
            return
        bounds = index.get("start_time", {})
        high = span["last_start"] + 1  # start times are whole seconds
        if "$lt" in bounds:
            high = min(high, math.ceil(bounds["$lt"]))
        low = span["first_start"]
        if "$gt" in bounds:
            low = max(low, math.floor(bounds["$gt"]) + 1)
        if fields:
            fields = {**fields, "start_time": 1}  # a window is put in order by it

        async def read(start: int, high: int) -> list[dict]:
            times = {"start_time": {"$gte": start, "$lt": high}}
            window = []
            for status in statuses or (None,):
                # Only predicates one index serves completely: SecantusDB scans the collection for
                # a range plus any other predicate (a status list, is_auth).
                where = times if status is None else {"status": status, **times}
                window += await self.storage.records.find(where, fields)
            return window

        walk = windows(read, low, high, size=self.window_records, first=FIRST_WINDOW, ahead=ahead)
        async with contextlib.aclosing(walk):  # a caller that stops early cancels the read ahead now
            async for window in walk:
                window.sort(key=_newest_first)
                yield window

    async def each(self, query: "RecordQuery", fields: dict | None = None) -> AsyncIterator[dict]:
        """Every record matching `query` (only `fields` of it, when given), newest visit first,
        read in batches."""
        index = await self.index_query(query)
        if not self._selective(index):
            async for window in self._walk(index, query.statuses, fields, ahead=True):
                for record in window:
                    if query.matches(record):
                        yield record
            return
        async for record in self.storage.records.each(index, fields, sort=SORT, batch_size=500):
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
        by_phone = bool(equal)  # a phone is the most selective index; else a name's gram
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
        stored: set[str] = set(lifecycle.STATUSES)  # the stored statuses a match may have
        if args.get("is_auth") is not None:
            checks.append(_equals("is_auth", args["is_auth"]))
            stored &= _AUTHORIZED if args["is_auth"] else _UNAUTHORIZED
        if args.get("status"):
            wanted, now = set(args["status"]), self.clock()
            checks.append(lambda record: lifecycle.effective(record, now) in wanted)
            # An open visit whose window is over is seen at its end before the job stores it.
            stored &= wanted | {status for status, move in lifecycle.AT_END.items() if move.target in wanted}
        for name in ("name", "interviewee"):
            if args.get(name):
                checks.append(_contains(name, args[name]))
                if not by_phone and "grams" not in index:
                    index["grams"] = gram_for(name, args[name])
        statuses = tuple(sorted(stored)) if stored != set(lifecycle.STATUSES) else None
        return RecordQuery(index, checks, ends_after, statuses)

    async def get(self, record_id: int) -> dict:
        """A record, or 404."""
        record = await self.storage.records.find_one({"_id": record_id})
        if record is None or (record.get("revoked") or {}).get("reason") == "deleted":
            raise not_found("访客记录不存在")
        return record

    # --- authorization ------------------------------------------------------------------------

    async def authorize(self, record_id: int, employee_phone: str | None) -> dict:
        """Authorize a record (the interviewee, or an admin when `employee_phone` is None)."""
        record = await self.get(record_id)
        self._check_interviewee(record, employee_phone, "授权")
        if record["is_auth"] == 1 and status_of(record) not in (lifecycle.DECLINED, lifecycle.CANCELLED):
            return record  # approved already (and maybe signed in since): nothing changes
        if status_of(record) == lifecycle.PENDING and record["end_time"] <= self.clock():
            raise conflict("来访时间已过，无法授权")
        return await self.transition(record, lifecycle.APPROVE, events=["approval_pass_to_visitor"],
                                     also={"is_auth": 1})

    @staticmethod
    def _check_interviewee(record: dict, employee_phone: str | None, action: str) -> None:
        if employee_phone is not None and record["interviewee_phone"] != employee_phone:
            raise ApiError(403, f"只有被访员工本人可以{action}该访客")

    # --- the course of a visit (CONTRACT §9) ------------------------------------------------------

    async def transition(self, record: dict, move: Transition, *, events=(), also: dict | None = None) -> dict:
        """Move a record along `move` by one conditional update, with the notifications it causes and,
        when the move ends its passes, their revocation. Repeating a move that already happened
        changes nothing; a move not allowed from the current status is a 409 naming that status (as
        people see it: a visit whose window is over has ended)."""
        return (await self._move(record, move, events=events, also=also))[0]

    async def _move(self, record: dict, move: Transition, *, events=(), also: dict | None = None,
                    ending: bool = False) -> tuple[dict, bool]:
        """`transition`, and whether this call made the move (`ending`: the end of the window itself)."""
        while True:
            stored = status_of(record)
            current = stored if ending else lifecycle.effective(record, self.clock())
            if current == move.target:
                return record, False
            if current not in move.sources:
                raise conflict(lifecycle.refusal(move, current))
            update: dict = {"$set": {"status": move.target, **(also or {})}}
            if events:
                update["$push"] = {"pending_events": {"$each": list(events)}}
            condition = {"status": stored, "revoked.reason": {"$ne": "deleted"}}
            if move.gate_code is not None:
                updated = await self.revocations.revoke(record["_id"], move.name, move.gate_code,
                                                        condition=condition, update=update)
            else:
                updated = await self.storage.records.find_one_and_update(
                    {"_id": record["_id"], **condition}, update, return_new=True)
            if updated is not None:
                break
            record = await self.get(record["_id"])  # it changed meanwhile: judge again
        if events:
            await self.outbox.materialize(updated["_id"])
        if move.target == lifecycle.CHECKED_OUT:
            await self._queue_koala_cleanup(updated)
        return updated, True

    async def decline(self, record_id: int, employee_phone: str | None, reason: str) -> dict:
        """The interviewee (or an admin, `employee_phone` None) declines a visit not signed in yet."""
        record = await self.get(record_id)
        self._check_interviewee(record, employee_phone, "拒绝")
        return await self.transition(record, lifecycle.DECLINE, events=["decline_to_visitor"],
                                     also={"decline_reason": reason, "declined_at": int(self.clock())})

    async def cancel(self, record_id: int, binding: dict | None) -> dict:
        """The proposer (or an admin, `binding` None) calls a visit off before sign-in; the other side
        is told."""
        record = await self.get(record_id)
        if binding is not None and not self.proposed_by(record, binding):
            raise ApiError(403, "只有预约的申请人可以取消该预约")
        by_visitor = binding is not None and binding["type"] == "visitor"
        event = "cancel_to_employee" if by_visitor else "cancel_to_visitor"
        return await self.transition(record, lifecycle.CANCEL, events=[event],
                                     also={"cancelled_at": int(self.clock()),
                                           "cancelled_by": "visitor" if by_visitor else
                                           ("employee" if binding is not None else "admin")})

    @staticmethod
    def proposed_by(record: dict, binding: dict) -> bool:
        """Whether a bound user made this application or invitation (and so may cancel it)."""
        return binding["phone"] == record["proposer"] and record.get("created_by") == binding["_id"]

    async def sign_out(self, phone: str) -> dict:
        """Check out today's signed-in visit of a phone (the visitor's or a retinue's) at the kiosk."""
        day_start, day_end = self._today()
        candidates = await self.storage.records.find({"phones": phone, "start_time": {"$lt": day_end}})
        records = [r for r in candidates if r["end_time"] > day_start and status_of(r) in
                   (lifecycle.SIGNED_IN, lifecycle.CHECKED_OUT) and (r.get("revoked") or {}).get("reason") != "deleted"]
        if not records:
            raise not_found("今天没有已签到的来访")
        signed_in = [r for r in records if status_of(r) == lifecycle.SIGNED_IN]
        record = min(signed_in or records, key=lambda r: (r["start_time"], r["_id"]))
        return await self.transition(record, lifecycle.CHECK_OUT, also={"checkout_time": int(self.clock())})

    def note_exit(self, record_id: int, person: int) -> None:
        """An exit scan let a person out: remember it off the gate's path; the visit is checked out
        once everyone of it has left."""
        task = asyncio.get_running_loop().create_task(self._exit(record_id, person))
        self._exits.add(task)
        task.add_done_callback(self._exits.discard)

    async def _exit(self, record_id: int, person: int) -> None:
        try:
            record = await self.storage.records.find_one_and_update(
                {"_id": record_id, "status": lifecycle.SIGNED_IN}, {"$addToSet": {"exited": person}},
                return_new=True)
            if record is not None and len(set(record["exited"])) >= 1 + len(record["retinues"]):
                await self.transition(record, lifecycle.CHECK_OUT, also={"checkout_time": int(self.clock())})
        except Exception:  # the end of the visit window checks it out all the same
            log.exception("exit of person %s of record %s not recorded", person, record_id)

    async def end_visits(self, limit: int = 500) -> int:
        """Move every open visit whose window is over to its end (checked out, no-show, expired);
        safe in several processes at once, each record moved once."""
        now = self.clock()
        moved = 0
        for status, move in lifecycle.AT_END.items():
            due = await self.storage.records.find(
                {"status": status, "end_time": {"$lte": now}}, sort=[("end_time", ASCENDING)], limit=limit)
            for record in due:
                if (record.get("revoked") or {}).get("reason") == "deleted":
                    continue
                also = {"checkout_time": int(record["end_time"])} if move is lifecycle.CHECK_OUT else None
                try:
                    moved += (await self._move(record, move, also=also, ending=True))[1]
                except ApiError:  # moved on by someone else meanwhile
                    pass
        return moved

    async def ensure_grams(self, batch: int = 500) -> None:
        """Give records stored before name search was indexed their `grams`, once."""
        if await self.storage.counters.find_one({"_id": "record_grams"}) is not None:
            return
        while True:
            todo = await self.storage.records.find({"grams": {"$exists": False}},
                                                   {"name": 1, "interviewee": 1}, limit=batch)
            for record in todo:
                await self.storage.records.update_one({"_id": record["_id"]},
                                                      {"$set": {"grams": search_grams(record)}})
            if len(todo) < batch:
                break
        await self.storage.counters.update_one({"_id": "record_grams"}, {"$set": {"done": True}}, upsert=True)

    async def ensure_statuses(self) -> None:
        """Give records stored before statuses existed their status, once."""
        if await self.storage.counters.find_one({"_id": "record_statuses"}) is not None:
            return
        missing = {"status": {"$exists": False}}
        await self.storage.records.update_many({**missing, "signin_time": {"$gt": 0}},
                                               {"$set": {"status": lifecycle.SIGNED_IN}})
        await self.storage.records.update_many({**missing, "is_auth": 1}, {"$set": {"status": lifecycle.APPROVED}})
        await self.storage.records.update_many(missing, {"$set": {"status": lifecycle.PENDING}})
        await self.storage.counters.update_one({"_id": "record_statuses"}, {"$set": {"done": True}}, upsert=True)

    # --- sign-in -----------------------------------------------------------------------------

    def _today(self) -> tuple[int, int]:
        return day_bounds(datetime.datetime.fromtimestamp(self.clock(), self.tz).date(), self.tz)

    async def _todays_record(self, phone: str) -> dict:
        day_start, day_end = self._today()
        candidates = await self.storage.records.find({"phones": phone, "start_time": {"$lt": day_end}})
        records = [r for r in candidates
                   if status_of(r) in (lifecycle.APPROVED, lifecycle.SIGNED_IN) and r["end_time"] > day_start
                   and (r.get("revoked") or {}).get("reason") != "deleted"]
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
            return await self._sign_in_locked(record, lock, owner)
        finally:
            if await self.redis.get(lock) == owner:
                await self.redis.delete(lock)

    async def _sign_in_locked(self, record: dict, lock: str, owner: str) -> dict:
        people = [record, *record["retinues"]]
        for index, person in enumerate(people):
            if person.get("koala_id"):
                continue  # created by an earlier attempt that failed later: reuse it
            if not await self.redis.eval(_HOLD_LOCK, 1, lock, owner, SIGNIN_LOCK_TTL):
                raise ApiError(409, "该预约正在签到，请稍后再试")
            prefix = f"retinues.{index - 1}." if index else ""
            photo = (await self.images.get(person["photo"]))[0] if person.get("photo") else None
            mark = self.koala.mark(record["_id"], index, self.clock())
            try:
                if person.get("koala_mark"):
                    # An earlier create failed or its answer never came: Koala may have made the
                    # subject all the same. Remove it before making this person's only one.
                    await self._remove_marked(record["_id"], index, person["name"])
                await self.storage.records.update_one({"_id": record["_id"]},
                                                      {"$set": {prefix + "koala_mark": mark.text()}})
                koala_id = await self.koala.create_visitor(
                    name=person["name"], phone=person["phone"], start_time=record["start_time"],
                    end_time=record["end_time"], interviewee=record["interviewee"],
                    come_from=record["come_from"], purpose=record["purpose"], remark=record["remark"],
                    photo=photo, mark=mark,
                )
            except KoalaError as exc:
                log.warning("sign-in of record %s stopped: %s", record["_id"], exc.message)
                raise upstream_failed(f"写入考拉系统失败：{exc.message}") from None
            # Set once: a person's subject, once recorded, is never replaced.
            saved = await self.storage.records.find_one_and_update(
                {"_id": record["_id"], prefix + "koala_id": {"$in": [0, None]}},
                {"$set": {prefix + "koala_id": koala_id}},
                projection={"_id": 1})
            if saved is None:  # deleted meanwhile, or recorded by another sign-in: ours is surplus
                await self._discard_subject(koala_id)
                record = await self.get(record["_id"])
                return record if record["signin_time"] else await self._sign_in_locked(record, lock, owner)
            person["koala_id"] = koala_id
        tokens = {"token": new_token(24)}
        for i in range(len(record["retinues"])):
            tokens[f"retinues.{i}.token"] = new_token(24)
        now = int(self.clock())
        updated = await self.storage.records.find_one_and_update(
            {"_id": record["_id"], "signin_time": 0, "status": lifecycle.APPROVED, "revoked": {"$exists": False}},
            {"$set": {**tokens, "tokens": list(tokens.values()), "signin_time": now, "status": lifecycle.SIGNED_IN},
             "$push": {"pending_events": {"$each": ["signin_to_visitor", "visitor_signin_to_employee"]}}},
            return_new=True,
        )
        if updated is None:  # signed in by another kiosk at the same moment, or revoked
            record = await self.get(record["_id"])
            if record.get("revoked"):
                raise not_found("今天没有已审批的预约")
            return record
        await self.gate_cache.publish(updated)
        await self.outbox.materialize(updated["_id"])
        return updated

    async def _remove_marked(self, record_id: int, person: int, name: str) -> None:
        """Delete the subjects Koala holds for one person of a record (raises KoalaError)."""
        for subject, mark in await self.koala.marked_visitors(name):
            if (mark.record_id, mark.person) == (record_id, person):
                log.info("removing Koala subject %s left by a failed sign-in of record %s", subject["id"], record_id)
                await self.koala.delete_subject(subject["id"])

    async def _discard_subject(self, subject_id: int) -> None:
        try:
            await self.koala.delete_subject(subject_id)
        except KoalaError as exc:  # the reconciliation removes it later
            log.warning("surplus Koala subject %s not deleted yet: %s", subject_id, exc.message)

    async def reconcile_koala_subjects(self) -> int:
        """Delete the visitor subjects this system created in Koala that no record owns: a person's
        second subject, or one of a record that is gone; one whose person has none recorded only
        after KOALA_ORPHAN_GRACE, as a sign-in may be about to record it. Safe in several processes at
        once. Returns how many were deleted."""
        try:
            marked = await self.koala.marked_visitors()
        except KoalaNotConfigured:
            return 0
        except KoalaError as exc:
            log.warning("Koala subjects not reconciled: %s", exc.message)
            return 0
        owners: dict[int, list[int]] = {}
        ids = sorted({mark.record_id for _, mark in marked})
        for i in range(0, len(ids), 500):
            for record in await self.storage.records.find({"_id": {"$in": ids[i:i + 500]}},
                                                          {"koala_id": 1, "retinues.koala_id": 1}):
                owners[record["_id"]] = [p.get("koala_id", 0) for p in [record, *record.get("retinues", [])]]
        now, deleted = self.clock(), 0
        for subject, mark in marked:
            people = owners.get(mark.record_id, [])
            owner = people[mark.person] if mark.person < len(people) else None
            if owner == subject["id"] or (owner == 0 and now - mark.at < KOALA_ORPHAN_GRACE):
                continue
            try:
                await self.koala.delete_subject(subject["id"])
            except KoalaError as exc:
                log.warning("orphaned Koala subject %s not deleted yet: %s", subject["id"], exc.message)
                continue
            log.info("deleted Koala subject %s of record %s person %s: no record owns it",
                     subject["id"], mark.record_id, mark.person)
            deleted += 1
        return deleted

    # --- deletion ----------------------------------------------------------------------------

    async def delete(self, record_id: int) -> None:
        """Delete a record. Its QR codes are refused by every gate once this returns, through the one
        revocation path; what follows (notifications cancelled, photos, Koala subjects, the record
        itself) is finished now or, after a failure, by `finish_deletions`."""
        record = await self.revocations.revoke(record_id, "deleted", NO_PERMISSION)
        if record is None:
            raise not_found("访客记录不存在")
        try:
            await self._finish_deletion(record)
        except Exception:  # the revocation holds; the periodic job finishes the rest
            log.exception("deletion of record %s will be finished later", record_id)

    async def _finish_deletion(self, record: dict) -> None:
        record_id = record["_id"]
        await self.outbox.cancel(record_id)
        await self._queue_koala_cleanup(record, now=False)
        await self.images.delete([record.get("photo")] + [p.get("photo") for p in record["retinues"]])
        if await self.storage.records.delete_one({"_id": record_id, "revoked.reason": "deleted"}):
            await self._count_records(-1)
        await self.remove_koala_subjects()

    async def _queue_koala_cleanup(self, record: dict, now: bool = True) -> None:
        """Queue the removal of a record's Koala visitor subjects (the visit ended or is deleted); tried
        at once when `now`, and by the periodic job until Koala confirms."""
        koala_ids = [p["koala_id"] for p in [record, *record["retinues"]] if p.get("koala_id")]
        if not koala_ids:
            return
        await self.storage.koala_cleanup.update_one(
            {"_id": f"record:{record['_id']}"},
            {"$setOnInsert": {"subject_ids": koala_ids, "attempts": 0, "created_at": self.clock()}}, upsert=True)
        if now:
            await self.remove_koala_subjects()

    async def finish_deletions(self) -> int:
        """Finish deletions a failure interrupted: records revoked as deleted but still stored."""
        done = 0
        async for record in self.storage.records.each({"revoked.reason": "deleted"}):
            await self._finish_deletion(record)
            done += 1
        return done

    async def failing_koala_removals(self, limit: int = 200) -> list[dict]:
        """Queued Koala removals that have failed at least once, oldest first."""
        jobs = await self.storage.koala_cleanup.find(
            {"attempts": {"$gte": 1}}, sort=[("attempts", ASCENDING), ("created_at", ASCENDING)], limit=limit)
        return sorted(jobs, key=lambda job: job["created_at"])

    async def retry_koala_removal(self, job_id: str) -> int:
        """Try one queued Koala removal now; how many of its subjects are still to delete."""
        await self.remove_koala_subjects(only=job_id)
        job = await self.storage.koala_cleanup.find_one({"_id": job_id}, {"subject_ids": 1})
        return len(job["subject_ids"]) if job else 0

    async def remove_koala_subjects(self, only: str | None = None) -> int:
        """Delete the queued Koala subjects (of one queued removal, `only` its _id); what fails stays
        queued for the next try."""
        done = 0
        async for job in self.storage.koala_cleanup.each({} if only is None else {"_id": only}):
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
        """The record's status as people read it at a glance, in Chinese."""
        return lifecycle.LABELS[lifecycle.effective(record, self.clock())]

    def present(self, record: dict, cloud_url: str) -> dict:
        """A record as the seed's responses show it."""
        signed = bool(record["signin_time"])

        def person(p: dict) -> dict:
            token = p.get("token", "") if signed else ""
            return {
                "subject_id": p.get("koala_id", 0) if signed else 0,
                "name": p["name"], "phone": p["phone"],
                "photo": f"{cloud_url}/avatar/{p['photo']}" if p.get("photo") else "",
                "qrcode": qr_content(record["_id"], token) if token else "",
                "qrcode_img_url": f"{cloud_url}/qrcode/{token}.png" if token else "",
            }

        main = person(record)
        return {
            "id": record["_id"], **main, "subject_type": 1,
            "purpose": record["purpose"], "remark": record["remark"], "come_from": record["come_from"],
            "proposer": record["proposer"], "interviewee": record["interviewee"],
            "interviewee_phone": record["interviewee_phone"], "department": record.get("department", ""),
            "start_time": record["start_time"], "end_time": record["end_time"], "group_ids": "",
            "is_auth": record["is_auth"], "status": lifecycle.effective(record, self.clock()), "signin_time": record["signin_time"],
            "create_time": record.get("create_time", 0),
            "retinues": [person(p) for p in record["retinues"]],
            "anonymized": bool(record.get("anonymized")),
        }
