"""MongoDB access. The only module that knows the driver (motor today): the rest of the code reads
and writes through `Collection`, in plain dicts, lists and numbers, so PyMongo's AsyncMongoClient
can replace motor here without touching anything else."""
from __future__ import annotations

import dataclasses
import logging
from typing import AsyncIterator

import pymongo
from pymongo.write_concern import WriteConcern
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ServerSelectionTimeoutError

log = logging.getLogger(__name__)

# Errors that mean "the database cannot be reached" (answered with 503).
UNAVAILABLE_ERRORS = (ConnectionFailure, ServerSelectionTimeoutError)
__all__ = ["Storage", "Collection", "Updated", "DuplicateKeyError", "UNAVAILABLE_ERRORS", "ASCENDING", "DESCENDING"]

ASCENDING = pymongo.ASCENDING
DESCENDING = pymongo.DESCENDING
# The hint for a filter on `_id` plus conditions ({"_id": 5, "status": "approved"}): SecantusDB plans
# such a filter as a scan of the whole collection (measured: 3,000 documents examined of 3,000),
# MongoDB by the _id index; with this hint both read the one document.
BY_ID = [("_id", ASCENDING)]

# Every index a query of the application relies on, created at start-up
# (while collections are small: building one over a large collection is slow).
# Each query sends MongoDB only predicates that one of these indexes serves completely
# (SecantusDB, the embedded server, scans the collection otherwise); see wxapp.visits.RecordQuery.
INDEXES = {
    "api_keys": [
        pymongo.IndexModel([("key_hash", ASCENDING)], unique=True, name="key_hash_unique"),
        pymongo.IndexModel([("created_at", DESCENDING)], name="created_at"),
    ],
    "admins": [],
    "wechat_users": [],
    "settings": [],
    "counters": [],
    # The state of the periodic jobs shared by every process (wxapp.retention): leases, cursors, last runs.
    "jobs": [],
    # The image sweep walks images in order of creation, asking who names them (records, bindings).
    "images": [pymongo.IndexModel([("created_at", ASCENDING)], name="created_at")],
    # One binding per WeChat user (_id = openid); a phone bound once per kind.
    "bindings": [
        pymongo.IndexModel([("type", ASCENDING), ("phone", ASCENDING)], unique=True, name="type_phone_unique"),
        pymongo.IndexModel([("avatar", ASCENDING)], name="avatar"),
        # Bindings unused for longer than the retention period (wxapp.retention).
        pymongo.IndexModel([("last_used_at", ASCENDING)], name="last_used_at"),
    ],
    # Visit records (_id = integer id). Every list is sorted by start_time, then id, descending.
    "records": [
        pymongo.IndexModel([("start_time", DESCENDING), ("_id", DESCENDING)], name="start_id"),
        pymongo.IndexModel([("phone", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)], name="phone"),
        pymongo.IndexModel([("proposer", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)],
                           name="proposer"),
        pymongo.IndexModel([("interviewee_phone", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)],
                           name="interviewee_phone"),
        # Everyone's phone (visitor and retinues): kiosk sign-in by any of them.
        pymongo.IndexModel([("phones", ASCENDING), ("start_time", DESCENDING)], name="phones"),
        # Proposer and visitor: "my records" on the phone.
        pymongo.IndexModel([("parties", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)],
                           name="parties"),
        pymongo.IndexModel([("tokens", ASCENDING)], name="tokens"),
        # Name and interviewee substring search (wxapp.visits.search_grams).
        pymongo.IndexModel([("grams", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)], name="grams"),
        pymongo.IndexModel([("pending_events", ASCENDING)], name="pending_events"),
        # Open visits whose window is over (Visits.end_visits).
        pymongo.IndexModel([("status", ASCENDING), ("end_time", ASCENDING)], name="status_end"),
        # Approved visits of a day, for the morning reminder (wxapp.reminders).
        pymongo.IndexModel([("status", ASCENDING), ("start_time", ASCENDING)], name="status_start"),
        # Visits ended before the retention period, in the order they are anonymised (wxapp.retention).
        pymongo.IndexModel([("end_time", ASCENDING), ("_id", ASCENDING)], name="end_id"),
        pymongo.IndexModel([("retention_pending", ASCENDING)], name="retention_pending", sparse=True),
        # Revocations a failure left half done (wxapp.revocation, Visits.finish_deletions).
        pymongo.IndexModel([("revoke_pending", ASCENDING)], name="revoke_pending", sparse=True),
        pymongo.IndexModel([("revoked.reason", ASCENDING)], name="revoked_reason", sparse=True),
        # Which records name an image (the image sweep).
        pymongo.IndexModel([("photo", ASCENDING)], name="photo"),
        pymongo.IndexModel([("retinues.photo", ASCENDING)], name="retinue_photos"),
    ],
    # Records whose passes were revoked (_id = record id; see wxapp.revocation): followed by every
    # process, consulted by token when the record is gone, kept until `expires_at`.
    "revocations": [
        pymongo.IndexModel([("changed_at", ASCENDING)], name="changed_at"),
        pymongo.IndexModel([("tokens", ASCENDING)], name="tokens"),
        # Name and interviewee substring search (wxapp.visits.search_grams).
        pymongo.IndexModel([("grams", ASCENDING), ("start_time", DESCENDING), ("_id", DESCENDING)], name="grams"),
        pymongo.IndexModel([("redis_pending", ASCENDING)], name="redis_pending", sparse=True),
        pymongo.IndexModel([("expires_at", ASCENDING)], name="expire", expireAfterSeconds=0),
    ],
    # Notifications to send (_id = "<event>:<record id>:<channel>", so each is written once).
    "outbox": [
        # Claimable entries: pending and due, or sending with an expired lease (due_at = lease end).
        pymongo.IndexModel([("status", ASCENDING), ("due_at", ASCENDING)], name="due"),
        pymongo.IndexModel([("created_at", DESCENDING)], name="created"),
        pymongo.IndexModel([("status", ASCENDING), ("created_at", DESCENDING)], name="status_created"),
        pymongo.IndexModel([("record_id", ASCENDING), ("status", ASCENDING)], name="record_status"),
        # One reminder per employee, visitor and few minutes (see wxapp.outbox.BATCH_WINDOW).
        pymongo.IndexModel([("batch", ASCENDING)], unique=True, sparse=True, name="batch_unique"),
    ],
    # Koala subjects still to delete after their record was deleted while Koala was down.
    "koala_cleanup": [
        # Removals that keep failing, for /admin/koala.
        pymongo.IndexModel([("attempts", ASCENDING), ("created_at", ASCENDING)], name="attempts"),
    ],
    # Every gate decision, in buckets of many entries (see wxapp.gate.PassLog).
    "passes": [
        pymongo.IndexModel([("time", DESCENDING)], name="time"),
        pymongo.IndexModel([("record_ids", ASCENDING), ("time", DESCENDING)], name="record_ids"),
    ],
    # Left by versions before `revocations`: read once by Revocations.upgrade, then dropped.
    "revoked_tokens": [],
}


def _by_id(query, kwargs: dict) -> dict:
    """`kwargs` with the _id index as hint when `query` picks documents by `_id` and more (see BY_ID)."""
    if isinstance(query, dict) and "_id" in query and len(query) > 1 and "hint" not in kwargs:
        return {**kwargs, "hint": BY_ID}
    return kwargs


@dataclasses.dataclass(frozen=True)
class Updated:
    """What an update or a replacement did: how many documents matched its filter, how many changed."""

    matched: int
    modified: int


class Collection:
    """One collection, in the application's words: filters, updates and documents are dicts; reads
    answer dicts and lists, writes plain numbers. Sorts are lists of (field, ASCENDING or DESCENDING).
    Whatever picks documents by `_id` plus conditions uses the _id index (see BY_ID), in every module
    alike (the conditional updates of every state change are such)."""

    def __init__(self, collection):
        self._collection = collection

    # --- reads ---------------------------------------------------------------------------------

    async def find_one(self, query: dict, projection: dict | None = None, *,
                       sort: list | None = None) -> dict | None:
        """The first document matching `query` (in `sort` order), only `projection`'s fields when given."""
        return await self._collection.find_one(query, projection, **_by_id(query, _sorted(sort)))

    async def find(self, query: dict, projection: dict | None = None, *, sort: list | None = None,
                   skip: int = 0, limit: int = 0) -> list[dict]:
        """The documents matching `query`, at most `limit` of them (0: all; bound it where it can grow)."""
        cursor = self._cursor(query, projection, sort, skip=skip, limit=limit)
        return await cursor.to_list(limit or None)

    async def by_ids(self, ids: list) -> list[dict]:
        """The documents of `ids`, whole and in that order (one that is gone is left out): a page
        picked from a walk over a few fields, read in one round trip."""
        found = {doc["_id"]: doc for doc in await self.find({"_id": {"$in": ids}})} if ids else {}
        return [found[i] for i in ids if i in found]

    async def each(self, query: dict, projection: dict | None = None, *, sort: list | None = None,
                   batch_size: int = 0) -> AsyncIterator[dict]:
        """Every document matching `query`, read from the server `batch_size` at a time (0: the
        server's default), for walks too long to hold in one list. Leaving the loop early ends the read."""
        cursor = self._cursor(query, projection, sort, batch_size=batch_size)
        try:
            async for doc in cursor:
                yield doc
        finally:
            await cursor.close()

    async def count(self, query: dict, *, limit: int = 0) -> int:
        """How many documents match `query` (counting stops at `limit` when given)."""
        return await self._collection.count_documents(query, **_by_id(query, {"limit": limit} if limit else {}))

    async def aggregate(self, pipeline: list[dict]) -> list[dict]:
        """The documents an aggregation pipeline yields (keep its output small: it is one list)."""
        return await self._collection.aggregate(pipeline).to_list(None)

    def _cursor(self, query, projection, sort, *, skip=0, limit=0, batch_size=0):
        cursor = self._collection.find(query, projection, **_by_id(query, {}))
        if sort:
            cursor = cursor.sort(sort)
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit)
        if batch_size:
            cursor = cursor.batch_size(batch_size)
        return cursor

    # --- writes --------------------------------------------------------------------------------

    async def insert_one(self, doc: dict) -> None:
        """Store a new document (DuplicateKeyError when a unique index already holds its key)."""
        await self._collection.insert_one(doc)

    async def update_one(self, query: dict, update: dict, *, upsert: bool = False) -> Updated:
        """Apply `update` to the first document matching `query` (created from both when `upsert`)."""
        result = await self._collection.update_one(query, update, **_by_id(query, {"upsert": upsert}))
        return Updated(result.matched_count, result.modified_count)

    async def update_many(self, query: dict, update: dict) -> Updated:
        """Apply `update` to every document matching `query`."""
        result = await self._collection.update_many(query, update)
        return Updated(result.matched_count, result.modified_count)

    async def bulk_update(self, changes: list[tuple[dict, dict]]) -> int:
        """Apply many (query, update) pairs, each to the first document its query matches, in one
        round trip and in no particular order; how many documents changed."""
        if not changes:
            return 0
        result = await self._collection.bulk_write(
            [pymongo.UpdateOne(query, update, **_by_id(query, {})) for query, update in changes], ordered=False)
        return result.modified_count

    async def replace_one(self, query: dict, doc: dict, *, upsert: bool = False) -> Updated:
        """Replace the first document matching `query` by `doc` (inserted when none does and `upsert`)."""
        result = await self._collection.replace_one(query, doc, **_by_id(query, {"upsert": upsert}))
        return Updated(result.matched_count, result.modified_count)

    async def delete_one(self, query: dict) -> int:
        """Delete the first document matching `query`; how many went (0 or 1)."""
        return (await self._collection.delete_one(query, **_by_id(query, {}))).deleted_count

    async def delete_many(self, query: dict) -> int:
        """Delete every document matching `query`; how many went."""
        return (await self._collection.delete_many(query)).deleted_count

    async def find_one_and_update(self, query: dict, update: dict, *, projection: dict | None = None,
                                  sort: list | None = None, upsert: bool = False,
                                  return_new: bool = False) -> dict | None:
        """Apply `update` to the first document matching `query` (in `sort` order) in one atomic step;
        that document as it was before, or as it is after when `return_new`; None when none matched
        (and none was inserted)."""
        after = pymongo.ReturnDocument.AFTER if return_new else pymongo.ReturnDocument.BEFORE
        return await self._collection.find_one_and_update(
            query, update, projection, **_by_id(query, {**_sorted(sort), "upsert": upsert, "return_document": after}))

    async def find_one_and_delete(self, query: dict, *, projection: dict | None = None) -> dict | None:
        """Delete the first document matching `query` in one atomic step; it, or None."""
        return await self._collection.find_one_and_delete(query, projection, **_by_id(query, {}))

    # --- upgrades ------------------------------------------------------------------------------

    async def index_names(self) -> set[str]:
        """The names of the collection's indexes."""
        return set(await self._collection.index_information())

    async def drop_index(self, name: str) -> None:
        """Remove an index no query needs any more."""
        await self._collection.drop_index(name)

    async def drop(self) -> None:
        """Remove the whole collection (one left behind by an older version)."""
        await self._collection.drop()


def _sorted(sort: list | None) -> dict:
    return {"sort": sort} if sort else {}


def ensure_root_user(uri: str, user: str, password: str) -> None:
    """Create (or reset) a root SCRAM user on a server that runs without auth (blocking; once per
    embedded data folder, before its first start with auth)."""
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
        command = "updateUser" if client.admin.command("usersInfo", user)["users"] else "createUser"
        client.admin.command(command, user, pwd=password, roles=["root"])


class Storage:
    """One MongoDB client for the whole process and the application's collections.

    Writes are acknowledged only once journaled (`j: true`), so a write the API confirmed survives
    a crash of the database. A write concern given in MONGO_URI (`w=majority&journal=true` for a
    replica set) is used as it is."""

    def __init__(self, uri: str, db_name: str, *, timeout_ms: int = 5000):
        self.client = AsyncIOMotorClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            appname="visitor",
        )
        concern = self.client.write_concern
        if not concern.document:  # MONGO_URI says nothing: the server's default would not wait for the journal
            concern = WriteConcern(j=True)
        log.info("MongoDB writes are acknowledged with write concern %s", concern.document)
        # The driver's own database: for tests and benchmarks that look into it, never for the product.
        self.db = self.client.get_database(db_name, write_concern=concern)
        self.db_name = db_name
        self._collections = {name: Collection(self.db[name]) for name in INDEXES}

    def __getattr__(self, name: str) -> Collection:
        # storage.records, storage.outbox, ...: every collection of INDEXES, each used by its owner
        # alone (tests/test_storage_boundary.py).
        try:
            return self.__dict__["_collections"][name]
        except KeyError:
            raise AttributeError(name) from None

    async def ping(self) -> None:
        """Raise one of UNAVAILABLE_ERRORS unless the server answers."""
        await self.client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create every index in INDEXES (a no-op for those that exist)."""
        for name, models in INDEXES.items():
            if models:
                await self.db[name].create_indexes(models)

    async def next_id(self, name: str) -> int:
        """The next integer id of a sequence (atomic across processes)."""
        for _ in range(5):
            doc = await self.counters.find_one_and_update(
                {"_id": name}, {"$inc": {"seq": 1}}, upsert=True, return_new=True)
            # SecantusDB answers nothing to one of several upserts that create the counter at once;
            # the counter exists by then, so asking again gives a fresh number.
            if doc is not None:
                return doc["seq"]
        raise RuntimeError(f"counter {name!r} gave no number")

    async def drop(self) -> None:
        """Drop the whole database (tests)."""
        await self.client.drop_database(self.db_name)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
