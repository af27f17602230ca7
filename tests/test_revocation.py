"""Revoking a record's passes under faults: once a deletion returns, no process's gate opens for its
QR codes, even while Redis takes no writes; what the deletion leaves to do is finished later."""
from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import time

import pytest
import redis.asyncio as aioredis
import tornado.httpserver

from handlers import make_app
from tests.conftest import ADMIN_KEY, GATE_KEY
from tests.support import Browser
from wxapp.context import build_context
from wxapp.embedded import free_port


async def until(predicate, seconds=5.0):
    """Whether `predicate` (plain or async) comes true within `seconds`."""
    async def holds():
        value = predicate()
        return await value if asyncio.iscoroutine(value) else value
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await holds():
            return True
        await asyncio.sleep(0.05)
    return await holds()


@pytest.fixture
def second_process(io_loop, config, clock, http_client):
    """Another server process on the same databases: its own context and HTTP server."""
    started = []

    async def start():
        other = await build_context(config, clock=clock)
        other.background.start()
        server = tornado.httpserver.HTTPServer(make_app(other.services))
        port = free_port()
        server.listen(port, "127.0.0.1")
        started.append((other, server))
        return Browser(http_client, f"http://127.0.0.1:{port}"), other.services
    yield start
    for other, server in started:
        server.stop()
        io_loop.run_sync(other.close)


@pytest.fixture
def raw_redis(io_loop, databases):
    """A Redis connection of the test's own, to pause the server with."""
    client = aioredis.Redis.from_url(databases.redis_url)
    yield client
    io_loop.run_sync(lambda: client.execute_command("CLIENT", "UNPAUSE"))
    io_loop.run_sync(client.aclose)


async def passes(browser: Browser) -> list[str]:
    records = (await browser.fetch("/v1/visit/records?type=web", key=ADMIN_KEY)).json()["data"]
    return [p["qrcode"] for p in [records[0], *records[0]["retinues"]]]


async def scan(browser: Browser, qrcode: str) -> dict:
    resp = await browser.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": "east-1"}, key=GATE_KEY)
    return resp.json()


@pytest.mark.gen_test(timeout=60)
async def test_a_deletion_while_redis_takes_no_writes_closes_every_process_gate(gate_path,
        journey, anonymous, ctx, background, second_process, raw_redis, fakes):
    background.start()
    rid = await journey()
    other, other_ctx = await second_process()
    codes = await passes(anonymous)
    assert await until(lambda: other_ctx.near.live and ctx.near.live)
    for browser in (anonymous, other):  # both processes hold the passes in their near caches
        for qrcode in codes:
            assert (await scan(browser, qrcode))["code"] == 0
    assert len(fakes.koala.visitors()) == 3

    await raw_redis.execute_command("CLIENT", "PAUSE", 7000, "WRITE")
    paused = time.monotonic()
    resp = await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
    assert resp.json() == {"code": 0, "err_msg": ""}
    assert time.monotonic() - paused < 7, "the deletion waited for Redis instead of confirming without it"

    # From the moment it returned, through the end of the pause and after: never open, anywhere.
    seen = set()
    while time.monotonic() - paused < 9:
        for browser in (anonymous, other):
            for qrcode in codes:
                seen.add((await scan(browser, qrcode))["code"])
        await asyncio.sleep(0.2)
    assert seen == {-204}

    # What the deletion leaves to do is done: Koala subjects, notifications, the record itself.
    assert await until(lambda: fakes.koala.visitors() == [], 10)
    assert await ctx.storage.db.outbox.count_documents({"record_id": rid, "status": "pending"}) == 0
    assert await ctx.storage.db.records.count_documents({"_id": rid}) == 0
    assert (await anonymous.fetch("/v1/visit/records?type=web", key=ADMIN_KEY)).json()["data"] == []
    # Redis caught up, so a process started now refuses the passes from Redis alone.
    for qrcode in codes:
        token = json.loads(qrcode)["qrcode"]
        assert await until(lambda: _refused_in_redis(ctx, token))
    assert (await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)).status == 404


async def _refused_in_redis(ctx, token: str) -> bool:
    value = await ctx.redis.get(f"qr:{token}")
    return value is not None and json.loads(value).get("c") == -204


@pytest.mark.gen_test(timeout=60)
async def test_a_gate_that_hears_neither_mongodb_nor_redis_refuses_instead_of_opening(gate_path,
        journey, anonymous, ctx, background, raw_redis, databases):
    background.start()
    await journey()
    codes = await passes(anonymous)
    assert await until(lambda: ctx.near.live)
    assert (await scan(anonymous, codes[0]))["code"] == 0
    mongo = databases.mongo.proc.pid
    await raw_redis.execute_command("CLIENT", "PAUSE", 8000, "WRITE")
    os.kill(mongo, signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.revocations.grace + 1)
        answer = await scan(anonymous, codes[0])
        assert answer["code"] == 503, answer
    finally:
        os.kill(mongo, signal.SIGCONT)
        await raw_redis.execute_command("CLIENT", "UNPAUSE")
    assert await until(lambda: _opens(anonymous, codes[0]), 15)


async def _opens(browser, qrcode) -> bool:
    return (await scan(browser, qrcode))["code"] == 0


@pytest.mark.gen_test
async def test_a_revocation_interrupted_after_its_commit_is_finished_by_the_sweep(gate_path, journey, anonymous, ctx,
                                                                                  fakes, clock):
    rid = await journey()
    codes = await passes(anonymous)
    assert (await scan(anonymous, codes[0]))["code"] == 0
    # The process died right after committing the deletion: nothing else was done.
    await ctx.storage.db.records.update_one({"_id": rid}, {"$set": {
        "revoked": {"reason": "deleted", "code": -204, "at": clock()}, "revoke_pending": True}})
    ctx.near._drop([f"qr:{json.loads(codes[0])['qrcode']}"])
    assert await ctx.revocations.sweep() == 1
    assert await ctx.visits.finish_deletions() == 1
    for qrcode in codes:
        assert (await scan(anonymous, qrcode))["code"] == -204
    assert await ctx.storage.db.records.count_documents({"_id": rid}) == 0
    assert fakes.koala.visitors() == []
    assert await ctx.revocations.sweep() == 0


@pytest.mark.gen_test
async def test_revocations_expire_by_a_ttl_index_on_a_date(journey, anonymous, ctx):
    rid = await journey()
    await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
    job = await ctx.storage.db.revocations.find_one({"_id": rid})
    assert isinstance(job["expires_at"], datetime.datetime)
    assert job["expires_at"].timestamp() > time.time() + 80 * 86400
    indexes = await ctx.storage.db.revocations.index_information()
    assert indexes["expire"]["expireAfterSeconds"] == 0


@pytest.mark.gen_test
async def test_tokens_revoked_before_the_revocations_collection_still_answer_no_permission(gate_path, ctx, config, clock,
                                                                                          anonymous):
    token = "legacyTokenLegacyToken01"
    await ctx.storage.db["revoked_tokens"].insert_one({"_id": token, "record_id": 7, "revoked_at": clock()})
    restarted = await build_context(config, clock=clock)
    try:
        assert "revoked_tokens" not in await restarted.clients.storage.db.list_collection_names()
        await ctx.redis.flushdb()
        assert (await scan(anonymous, json.dumps({"id": 7, "qrcode": token})))["code"] == -204
    finally:
        await restarted.close()
