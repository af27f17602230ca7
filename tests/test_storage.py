"""Storage: an index behind every query the endpoints make, integer ids, and an outbox that survives crashes."""
import asyncio

import pytest

from wxapp.events import EVENTS
from wxapp import storage
from wxapp.outbox import COUNTING_WINDOW_ENTRIES
from wxapp.visits import SORT


def plan_stages(plan: dict) -> list[str]:
    stages = []
    while plan:
        stages.append(plan.get("stage", ""))
        plan = plan.get("inputStage")
    return stages


async def assert_indexed(collection, query, sort=None):
    cursor = collection.find(query)
    if sort:
        cursor = cursor.sort(sort)
    plan = (await cursor.explain())["queryPlanner"]["winningPlan"]
    stages = plan_stages(plan)
    assert "IXSCAN" in stages and "COLLSCAN" not in stages, (query, plan)


@pytest.mark.gen_test
async def test_every_records_query_is_served_by_an_index(ctx):
    visits = ctx.visits
    await ctx.storage.db.records.insert_many([{"_id": i, "start_time": i, "end_time": i + 10} for i in range(1, 30)])
    queries = [
        visits.filters({}),
        visits.filters({"end_time": 100}),
        visits.filters({"start_time": 5, "end_time": 100}),
        visits.filters({"start_time": 5}),
        visits.filters({"interviewee_phone": "13800000002", "name": "张", "is_auth": 1, "start_time": 5,
                        "end_time": 100}),
        visits.filters({"phone": "13900000001", "proposer": "13900000001"}),
        visits.filters({"proposer": "13900000001", "interviewee": "李"}),
        visits.filters({"name": "张"}, party="13900000001"),
        visits.filters({"name": "张三"}),
        visits.filters({"interviewee": "经理", "end_time": 100}),
    ]
    await ctx.storage.db.counters.insert_one({"_id": "longest_visit", "seconds": 7200})
    for query in queries:
        await assert_indexed(ctx.storage.db.records, await visits.index_query(query), SORT)
    await assert_indexed(ctx.storage.db.records, {"phones": "13900000001", "start_time": {"$lt": 100}})
    await assert_indexed(ctx.storage.db.records, {"tokens": "abc"})
    await assert_indexed(ctx.storage.db.records, {"pending_events": {"$in": list(EVENTS)}})


@pytest.mark.gen_test
async def test_the_other_collections_are_queried_by_index(ctx):
    await assert_indexed(ctx.storage.db.bindings, {"type": "employee", "phone": "13800000002"})
    await assert_indexed(ctx.storage.db.api_keys, {"key_hash": "0" * 64})
    await assert_indexed(ctx.storage.db.outbox, {"record_id": 1, "status": "pending"})
    await assert_indexed(ctx.storage.db.passes, {"record_ids": 1}, [("time", -1)])
    day = {"$gte": 1000, "$lt": 87400, "$lte": 5000}  # PassLog.search: one day before a cursor
    await assert_indexed(ctx.storage.db.passes, {"time": day}, [("time", -1)])
    await assert_indexed(ctx.storage.db.passes, {"record_ids": 1, "time": day}, [("time", -1)])
    for status in ("pending", "sending"):
        await assert_indexed(ctx.storage.db.outbox, {"status": status, "due_at": {"$lte": 1e10}}, [("due_at", 1)])
    await assert_indexed(ctx.storage.db.outbox, {}, [("created_at", -1)])
    await assert_indexed(ctx.storage.db.outbox, {"status": "failed"}, [("created_at", -1)])


@pytest.mark.gen_test
async def test_record_ids_are_consecutive_integers(ctx):
    assert [await ctx.storage.next_id("records") for _ in range(3)] == [1, 2, 3]


@pytest.mark.gen_test
async def test_the_first_ids_asked_for_at_once_are_all_given_and_distinct(ctx):
    for n in range(16):  # each a counter that does not exist yet
        ids = await asyncio.gather(*[ctx.storage.next_id(f"new-{n}") for _ in range(20)])
        assert len(set(ids)) == 20


@pytest.mark.gen_test
async def test_a_crash_between_a_change_and_its_outbox_entries_is_repaired(ctx, clock):
    # A record whose state change was stored with its event, but the process died before the entries.
    await ctx.storage.db.records.insert_one({
        "_id": 7, "phone": "13900000001", "interviewee_phone": "13800000002", "start_time": 1, "end_time": 2,
        "pending_events": ["approval_pass_to_visitor"],
    })
    assert await ctx.outbox.sweep() == 1
    assert [d["_id"] for d in await ctx.storage.db.outbox.find({}).to_list(None)] == ["approval_pass_to_visitor:7:sms"]
    assert (await ctx.storage.db.records.find_one({"_id": 7}))["pending_events"] == []
    assert await ctx.outbox.sweep() == 0


@pytest.mark.gen_test
async def test_the_longest_visit_is_worked_out_from_records_stored_without_it(ctx):
    await ctx.storage.db.records.insert_many([
        {"_id": 1, "start_time": 100, "end_time": 400}, {"_id": 2, "start_time": 1000, "end_time": 1100}])
    await ctx.visits.ensure_longest_visit()
    assert (await ctx.storage.db.counters.find_one({"_id": "longest_visit"}))["seconds"] == 300
    await ctx.storage.db.records.insert_one({"_id": 3, "start_time": 0, "end_time": 5000})
    await ctx.visits.ensure_longest_visit()  # recorded already: applications keep it current
    assert (await ctx.storage.db.counters.find_one({"_id": "longest_visit"}))["seconds"] == 300


@pytest.mark.gen_test
async def test_redis_commands_sent_together_do_not_queue_for_their_connections(ctx):
    keys = [f"k{n}" for n in range(16)]
    await asyncio.gather(*[ctx.redis.get(key) for key in keys])  # the pool holds 16 connections now
    passes, done = 0, False

    async def count_loop_passes():
        nonlocal passes
        while not done:
            passes += 1
            await asyncio.sleep(0)
    counter = asyncio.ensure_future(count_loop_passes())
    await asyncio.gather(*[ctx.redis.get(key) for key in keys])
    done = True
    await counter
    # About 8 loop passes for all 16 together; redis-py's default pool took over 50, three per
    # command, as it checks each connection under its lock. A busy server's loop pass takes
    # milliseconds: 32 gate scans at once waited half a second.
    assert passes < 20, passes


@pytest.mark.gen_test
async def test_a_conditional_update_by_id_reads_one_record_not_the_collection(ctx):
    await ctx.storage.db.records.insert_many([{"_id": i, "status": "approved"} for i in range(1, 2001)])
    # The cursor `find` and `each` read through, with the hint they give.
    plan = await ctx.storage.records._cursor({"_id": 1500, "status": "approved"}, None, None).explain()
    assert plan["executionStats"]["totalDocsExamined"] == 1, plan["executionStats"]
    updated = await ctx.storage.records.find_one_and_update(
        {"_id": 1500, "status": "approved"}, {"$set": {"status": "declined"}}, return_new=True)
    assert updated["status"] == "declined"
    assert (await ctx.storage.records.update_one({"_id": 1500, "status": "approved"}, {"$set": {"x": 1}})).matched == 0


async def plan_of(collection, query: dict) -> tuple[list[str], int]:
    """The stages of the plan MongoDB runs for a query, and how many documents it examined."""
    explained = await collection.find(query).explain()
    return plan_stages(explained["queryPlanner"]["winningPlan"]), explained["executionStats"]["totalDocsExamined"]


def recorded_filters(monkeypatch, collection: str, reads: tuple[str, ...]) -> list[dict]:
    """The filters of every query of `collection` by the Collection methods `reads` made from now
    on, while the test runs (the database answers them)."""
    sent = []
    for name in reads:
        def recording(self, query, *args, read=getattr(storage.Collection, name), **kwargs):
            if self._collection.name == collection:
                sent.append(query)
            return read(self, query, *args, **kwargs)
        monkeypatch.setattr(storage.Collection, name, recording)
    return sent


@pytest.fixture
def sent_filters(monkeypatch):
    """The filters of every records query made while a test runs (the database answers them)."""
    return recorded_filters(monkeypatch, "records", ("find", "each"))


@pytest.fixture
def outbox_filters(monkeypatch):
    """The filters of every outbox read made while a test runs (the database answers them)."""
    return recorded_filters(monkeypatch, "outbox", ("find", "find_one", "each", "count"))


@pytest.mark.gen_test(timeout=120)
async def test_lists_without_a_selective_filter_read_one_bounded_window_per_query(ctx, clock, sent_filters):
    # 600 visits over 60 days to come, ten a day: a list of them never reads more than a window at once.
    ctx.visits.window_records = 50
    statuses = ("approved", "approved", "signed_in", "pending", "declined")
    first = int(clock()) + 86400
    docs = [{"_id": i, "start_time": first + (i // 10) * 86400 + (i % 10) * 600, "end_time": 0,
             "status": statuses[i % 5], "is_auth": 0 if statuses[i % 5] == "pending" else 1, "signin_time": 0}
            for i in range(1, 601)]
    for doc in docs:
        doc["end_time"] = doc["start_time"] + 3600
    await ctx.storage.db.records.insert_many(docs)
    await ctx.visits.ensure_longest_visit()  # what start-up does for records stored before
    newest = sorted(docs, key=lambda d: (d["start_time"], d["_id"]), reverse=True)
    pending = [d["_id"] for d in newest if d["status"] == "pending"]

    items, page = await ctx.visits.find(ctx.visits.filters({}), 1, 20)
    assert [r["_id"] for r in items] == [d["_id"] for d in newest[:20]]
    assert (page["count"], page["total"]) == (600, 30)
    items, page = await ctx.visits.find(ctx.visits.filters({}), 25, 20)
    assert [r["_id"] for r in items] == [d["_id"] for d in newest[480:500]]
    items, page = await ctx.visits.find(ctx.visits.filters({"status": ("pending",)}), 3, 30)
    assert [r["_id"] for r in items] == pending[60:90] and page["count"] == 120
    items, page = await ctx.visits.find(ctx.visits.filters({"is_auth": 0}), 1, 5)
    assert [r["_id"] for r in items] == pending[:5] and page["count"] == 120
    assert [r["_id"] async for r in ctx.visits.each(ctx.visits.filters({}), {"_id": 1})] == [d["_id"] for d in newest]

    assert len(sent_filters) > 20
    for query in list(sent_filters):  # explain() is a find too
        stages, examined = await plan_of(ctx.storage.db.records, query)
        # Served by an index, nothing sorted in memory, at most a few windows' worth read.
        assert "IXSCAN" in stages and "COLLSCAN" not in stages and "SORT" not in stages, (query, stages)
        assert examined <= 2 * ctx.visits.window_records, (query, examined)


def outbox_entry(n: int, status: str, created_at: float) -> dict:
    return {"_id": f"signin_to_visitor:{n}:sms", "event": "signin_to_visitor", "channel": "sms",
            "to": "13900000001", "record_id": n, "status": status, "attempts": 1, "last_error": "",
            "due_at": created_at, "created_at": created_at}


@pytest.mark.gen_test(timeout=120)
async def test_the_notification_lists_read_one_bounded_window_of_an_index_per_query(ctx, clock, outbox_filters):
    # 1,200 entries over the last 60 days, twenty a day, half failed: what /admin/notifications reads
    # (Outbox.browse) never reads more than a window at once, nor what GET /v1/notifications reads.
    ctx.outbox.window_entries = 50
    now, day = clock(), 86400
    await ctx.storage.db.outbox.insert_many([
        outbox_entry(n, "failed" if n % 2 else "sent", now - 60 * day + (n // 20) * day + (n % 20) * 600)
        for n in range(1200)])
    for status in (None, "failed"):
        entries, more, pages = [], {"older": True}, 0
        while more["older"] and pages < 4:
            cursor = {"before": (entries[-1]["created_at"], entries[-1]["_id"])} if entries else {}
            entries, more = await ctx.outbox.browse(status, 20, **cursor)
            assert len(entries) == 20
            pages += 1
        back, more = await ctx.outbox.browse(status, 20, after=(entries[-1]["created_at"], entries[-1]["_id"]))
        assert len(back) == 20 and more == {"older": True, "newer": True}
    # The oldest page walks down to the epoch: the empty years below cost a few empty reads.
    oldest, more = await ctx.outbox.browse(None, 20, before=(now - 60 * day + 1800, "a"))
    assert [e["record_id"] for e in oldest] == [2, 1, 0] and not more["older"]
    page_queries = list(outbox_filters)
    entries, page = await ctx.outbox.list("failed", 3, 100)
    assert page["count"] == 600 and len(entries) == 100

    assert len(page_queries) > 20
    for query in list(outbox_filters):
        if "_id" in query:
            continue  # the /v1 page, read by id
        assert "created_at" in query and {"$gte", "$lt"} <= set(query["created_at"]), query
        stages, examined = await plan_of(ctx.storage.db.outbox, query)
        # Served by an index, nothing sorted in memory, at most a few windows' worth read (the /v1
        # count reads larger windows of times alone).
        assert "IXSCAN" in stages and "COLLSCAN" not in stages and "SORT" not in stages, (query, stages)
        window = ctx.outbox.window_entries if query in page_queries else COUNTING_WINDOW_ENTRIES
        assert examined <= 3 * window, (query, examined)
