"""Retention (CONTRACT §9, PIPL): old visits anonymised, unused bindings removed, once a day, by every
process without doing anything twice."""
from __future__ import annotations

import asyncio
import base64
import time

import pytest

from tests.conftest import ADMIN_KEY, GATE_KEY, KIOSK_KEY
from tests.fakes.base import make_jpeg
from wxapp.context import build_context

DAY = 86400
HOUR = 3600


async def admin_record(anonymous, rid) -> dict:
    resp = await anonymous.fetch("/v1/visit/records?type=web&size=100", key=ADMIN_KEY)
    found = [r for r in resp.json()["data"] if r["id"] == rid]
    assert found, f"record {rid} is not listed"
    return found[0]


async def run_until_done(*contexts, stagger: float = 0.0) -> list[int]:
    """Run every context's retention job at once (the n-th starting n × `stagger` seconds late), round
    after round, until today's run is complete; what each context did in all."""
    async def run(n, c):
        await asyncio.sleep(n * stagger)
        return await c.retention.run()

    totals = [0] * len(contexts)
    for _ in range(100):
        done = await asyncio.gather(*(run(n, c) for n, c in enumerate(contexts)))
        totals = [t + d for t, d in zip(totals, done)]
        job = await contexts[0].storage.db.jobs.find_one({"_id": "retention"})
        if job and job.get("day") and not job.get("running"):
            return totals
    raise AssertionError("the retention run did not finish")


@pytest.fixture
def old_visit(bind_visitor, bind_employee, clock, anonymous):
    """A signed-in visit with photos and two retinues, one gate scan logged; returns (record, visitor)."""
    async def make():
        await bind_employee("o-e1", "李经理", "13800000002", "市场部")
        visitor = await bind_visitor("o-v1", "13900000001", "访客小张")
        now = int(clock())
        photo = base64.b64encode(make_jpeg("visitor")).decode()
        resp = await visitor.fetch("/v1/subject", "POST", json={
            "subject_type": 1, "name": "张三", "phone": "13900000001", "proposer": "13900000001",
            "interviewee": "李经理", "interviewee_phone": "13800000002", "start_time": now - 600,
            "end_time": now + HOUR, "purpose": 2, "come_from": "星辰科技", "photo": photo,
            "retinues": [{"name": "随行一", "phone": "13700000011", "photo": photo},
                         {"name": "随行二", "phone": "13700000012"}]})
        rid = resp.json()["data"]["id"]
        admin = await anonymous.fetch(f"/v1/auth/{rid}", "PUT", key=ADMIN_KEY)
        assert admin.json()["code"] == 0, admin
        signed = (await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000001"},
                                        key=KIOSK_KEY)).json()["data"]
        scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": signed["qrcode"]}, key=GATE_KEY)
        assert scan.json()["code"] == 0
        return signed, visitor
    return make


@pytest.mark.gen_test
async def test_retention_is_180_days_by_default_and_an_admin_sets_it_within_bounds(anonymous, ctx):
    assert (await anonymous.fetch("/v1/config/retention", key=ADMIN_KEY)).json() == {
        "code": 0, "err_msg": "", "data": {"retention_days": 180}}
    saved = await anonymous.fetch("/v1/config/retention", "PUT", json={"retention_days": 30}, key=ADMIN_KEY)
    assert saved.json()["data"] == {"retention_days": 30}
    assert (await anonymous.fetch("/v1/config/retention", key=ADMIN_KEY)).json()["data"] == {"retention_days": 30}
    for bad in ({"retention_days": 6}, {"retention_days": 3651}, {"retention_days": "x"}, {}):
        resp = await anonymous.fetch("/v1/config/retention", "PUT", json=bad, key=ADMIN_KEY)
        assert resp.status == 400 and "retention_days" in resp.json()["err_msg"], bad
    assert (await anonymous.fetch("/v1/config/retention", key=KIOSK_KEY)).status == 403
    assert (await anonymous.fetch("/v1/config/retention")).status == 401
    assert (await ctx.system_settings.retention()) == {"retention_days": 30}


@pytest.mark.gen_test
async def test_the_openapi_document_describes_the_retention_endpoint_exactly(anonymous):
    doc = (await anonymous.fetch("/v1/openapi.json")).json()
    path = doc["paths"]["/v1/config/retention"]
    assert set(path) >= {"get", "put"}
    body = path["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["retention_days"]
    assert body["properties"]["retention_days"]["type"] == "integer"
    assert body["properties"]["retention_days"]["minimum"] == 7
    assert body["properties"]["retention_days"]["maximum"] == 3650
    assert "retention_days" in str(path["get"]["responses"])


@pytest.mark.gen_test
async def test_an_old_visit_is_anonymised_and_its_photos_passes_and_gate_log_are_gone(
        old_visit, anonymous, ctx, clock):
    signed, visitor = await old_visit()
    rid = signed["id"]
    await asyncio.sleep(0.6)  # the gate log is written off the request's path
    assert await ctx.pass_log.entries(rid)
    assert await ctx.outbox.for_record(rid)
    photos = [signed["photo"], signed["retinues"][0]["photo"]]
    assert [(await anonymous.fetch(url)).status for url in photos] == [200, 200]
    assert (await admin_record(anonymous, rid))["anonymized"] is False

    clock.advance(179 * DAY)  # not long enough yet
    await ctx.retention.run()
    assert (await admin_record(anonymous, rid))["name"] == "张三"

    clock.advance(2 * DAY)
    await ctx.retention.schedule_now()  # the run of that day is over: as if the next day had come
    assert await ctx.retention.run() >= 1
    data = await admin_record(anonymous, rid)
    assert data["anonymized"] is True
    assert (data["name"], data["phone"], data["proposer"]) == ("张*", "139****0001", "139****0001")
    assert data["interviewee_phone"] == "138****0002"
    assert [(p["name"], p["phone"]) for p in data["retinues"]] == [("随*", "137****0011"), ("随*", "137****0012")]
    assert data["photo"] == "" and data["qrcode"] == "" and data["qrcode_img_url"] == ""
    assert all(p["photo"] == "" and p["qrcode"] == "" for p in data["retinues"])
    assert data["status"] == "checked_out" and data["start_time"] and data["interviewee"] == "李经理"
    # The photos are deleted, the passes refused, the gate log forgets the record.
    assert [(await anonymous.fetch(url)).status for url in photos] == [404, 404]
    for qrcode in [signed["qrcode"], *(p["qrcode"] for p in signed["retinues"])]:
        scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode}, key=GATE_KEY)
        assert scan.json()["code"] in (-201, -204)
    await ctx.redis.flushdb()  # also when the gate has to ask MongoDB
    scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": signed["qrcode"]}, key=GATE_KEY)
    assert scan.json()["code"] in (-201, -204)
    await asyncio.sleep(0.6)
    assert [e for e in await ctx.pass_log.entries(rid) if e["code"] == 0] == []
    stored = await ctx.storage.db.records.find_one({"_id": rid})
    assert stored["tokens"] == [] and "retention_pending" not in stored
    assert await ctx.outbox.for_record(rid) == []  # its notifications named the phones
    # Nothing of it is found by the phone any more.
    found = await anonymous.fetch("/v1/visit/records?type=web&phone=13900000001", key=ADMIN_KEY)
    assert found.json()["data"] == []
    # The run is over for today; running again does nothing.
    assert await ctx.retention.run() == 0
    last = await ctx.retention.last_run()
    assert last["anonymized"] == 1 and last["retention_days"] == 180


@pytest.mark.gen_test
async def test_the_dashboard_still_counts_anonymised_visits(old_visit, ctx, clock, admin_login):
    signed, _ = await old_visit()
    before, _ = await ctx.stats.days(7)
    clock.advance(200 * DAY)
    await run_until_done(ctx)
    assert (await ctx.storage.db.records.find_one({"_id": signed["id"]}))["anonymized"] is True
    browser = await admin_login()
    for page in ("/admin/records", f"/admin/records/{signed['id']}", "/admin/records.csv"):
        resp = await browser.fetch(page)
        assert resp.status == 200 and "张三" not in resp.text and "13900000001" not in resp.text, page
    assert "张*" in (await browser.fetch(f"/admin/records/{signed['id']}")).text
    clock.advance(-200 * DAY)
    assert (await browser.fetch("/admin/")).status == 200
    after, _ = await ctx.stats.days(7)
    assert (after.expected, after.signed_in, after.people_signed_in) == (1, 1, 3)
    assert (after.expected, after.signed_in, after.people_signed_in) == (
        before.expected, before.signed_in, before.people_signed_in)


def stored_record(rid: int, end: int, *, tokens: bool) -> dict:
    """A record as the application stores it, written directly (thousands of them, fast)."""
    token = f"tok{rid:013d}aaaa" if tokens else ""
    return {
        "_id": rid, "subject_type": 1, "name": f"访客{rid}", "phone": f"139{rid:08d}", "purpose": 2, "remark": "",
        "come_from": "星辰科技", "proposer": f"139{rid:08d}", "interviewee": "李经理",
        "interviewee_phone": "13800000002", "department": "市场部", "start_time": end - HOUR, "end_time": end,
        "photo": "", "koala_id": 0, "token": token,
        "retinues": [{"name": "随行", "phone": f"137{rid:08d}", "photo": "", "koala_id": 0, "token": ""}],
        "tokens": [token] if tokens else [], "is_auth": 1, "status": "checked_out" if tokens else "no_show",
        "signin_time": end - HOUR if tokens else 0, "phones": [f"139{rid:08d}", f"137{rid:08d}"],
        "parties": [f"139{rid:08d}"], "created_by": "o-x", "create_time": end - 2 * HOUR, "pending_events": [],
    }


@pytest.mark.gen_test(timeout=120)
async def test_two_processes_anonymise_thousands_of_records_each_once_in_bounded_batches(ctx, config, clock):
    now = int(clock())
    old, recent = 2000, 50
    docs = [stored_record(i, now - 400 * DAY + i * 60, tokens=i % 100 == 0) for i in range(1, old + 1)]
    docs += [stored_record(old + i, now - 10 * DAY + i, tokens=False) for i in range(1, recent + 1)]
    await ctx.storage.db.records.insert_many(docs)
    await ctx.storage.db.counters.update_one({"_id": "records"}, {"$set": {"seq": old + recent}}, upsert=True)
    process = await build_context(config, clock=clock)
    try:
        started = time.monotonic()
        done = await run_until_done(ctx, process.services)
        seconds = time.monotonic() - started
    finally:
        await process.close()
    print(f"retention: {old} records anonymised in {seconds:.1f} s")
    assert sum(done) == old  # each record by one process only
    assert await ctx.storage.db.records.count_documents({"anonymized": True}) == old
    kept = await ctx.storage.db.records.find({"_id": {"$gt": old}}).to_list(None)
    assert len(kept) == recent and not any(r.get("anonymized") for r in kept)
    assert kept[0]["name"] == f"访客{old + 1}"
    # The signed-in ones had their passes revoked, through the revocation jobs.
    assert await ctx.storage.db.revocations.count_documents({"reason": "anonymized"}) == old // 100
    assert await ctx.gate_cache.lookup("tok0000000000100aaaa") == {"r": 100, "c": -204}
    last = await ctx.retention.last_run()
    assert last["anonymized"] == old
    job = await ctx.storage.db.jobs.find_one({"_id": "retention"})
    # The cursor stopped past the last old visit, before the kept ones.
    assert docs[old - 1]["end_time"] <= job["through"][0] < docs[old]["end_time"]
    assert await ctx.storage.db.records.count_documents({"retention_pending": True}) == 0
    assert seconds < 60


@pytest.mark.gen_test
async def test_a_run_interrupted_after_masking_is_finished_by_the_next(old_visit, ctx, clock, anonymous):
    signed, _ = await old_visit()
    clock.advance(200 * DAY)
    ctx.retention._drop_tokens = fail  # the process dies once the record is masked and its passes revoked
    with pytest.raises(RuntimeError):
        await ctx.retention.run()
    del ctx.retention._drop_tokens
    stored = await ctx.storage.db.records.find_one({"_id": signed["id"]})
    assert stored["anonymized"] and stored["retention_pending"] and stored["tokens"]
    scan = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": signed["qrcode"]}, key=GATE_KEY)
    assert scan.json()["code"] == -204
    await run_until_done(ctx)
    stored = await ctx.storage.db.records.find_one({"_id": signed["id"]})
    assert "retention_pending" not in stored and stored["tokens"] == []
    assert (await anonymous.fetch(signed["photo"])).status == 404
    assert (await ctx.retention.last_run())["anonymized"] == 1


async def fail(*args, **kwargs):
    raise RuntimeError("killed")


@pytest.mark.gen_test
async def test_bindings_unused_for_the_retention_period_are_removed(bind_visitor, bind_employee, ctx, clock):
    employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    avatar = (await ctx.storage.db.bindings.find_one({"_id": "o-e1"}))["avatar"]
    assert avatar and await ctx.images.get(avatar)
    clock.advance(100 * DAY)
    assert (await visitor.fetch("/v1/wechat/is_binding?weixinUserId=o-v1")).json()["code"] == 0  # a use
    clock.advance(100 * DAY)
    assert await ctx.retention.run() == 1
    assert await ctx.storage.db.bindings.find_one({"_id": "o-e1"}) is None
    assert await ctx.images.get(avatar) is None
    assert await ctx.storage.db.bindings.find_one({"_id": "o-v1"}) is not None
    assert (await ctx.retention.last_run())["bindings_removed"] == 1
    gone = await employee.fetch("/v1/wechat/is_binding?weixinUserId=o-e1")
    assert gone.json()["code"] == 404


@pytest.mark.gen_test
async def test_admin_settings_page_sets_retention_and_shows_the_last_run(admin_login, ctx, clock):
    browser = await admin_login()
    page = await browser.fetch("/admin/settings")
    assert page.status == 200 and "尚未执行过" in page.text and 'name="retention_days" value="180"' in page.text
    bad = await browser.fetch("/admin/settings/retention", "POST", form={
        "retention_days": "3", "_xsrf": browser.cookie("_xsrf")})
    assert bad.status == 400 and "保留天数" in bad.text
    saved = await browser.fetch("/admin/settings/retention", "POST", form={
        "retention_days": "30", "_xsrf": browser.cookie("_xsrf")})
    assert saved.status == 302 and saved.location == "/admin/settings?done=retention_saved"
    assert (await ctx.system_settings.retention())["retention_days"] == 30
    await ctx.retention.run()
    page = await browser.fetch("/admin/settings")
    assert "上次执行" in page.text and "匿名化 0 条访客记录" in page.text and "保留 30 天" in page.text


@pytest.mark.gen_test(timeout=60)
async def test_processes_whose_leases_run_out_still_anonymise_each_record_once(ctx, config, clock):
    now = int(clock())
    count = 400
    await ctx.storage.db.records.insert_many(
        [stored_record(i, now - 400 * DAY + i * 60, tokens=i % 20 == 0) for i in range(1, count + 1)])
    await ctx.storage.db.counters.update_one({"_id": "records"}, {"$set": {"seq": count}}, upsert=True)
    processes = [await build_context(config, clock=clock) for _ in range(2)]
    others = [process.services for process in processes]
    try:
        for c in (ctx, *others):  # every lease has run out by the time another process looks
            c.retention.lease, c.retention.batch = 0.0, 50
        done = await run_until_done(ctx, *others, stagger=0.05)
    finally:
        for process in processes:
            await process.close()
    assert sum(done) == count
    assert len([d for d in done if d]) > 1, done  # they did work side by side
    assert await ctx.storage.db.records.count_documents({"anonymized": True}) == count
    assert await ctx.storage.db.revocations.count_documents({"reason": "anonymized"}) == count // 20
    assert (await ctx.retention.last_run())["anonymized"] == count
