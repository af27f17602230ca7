"""Kiosk sign-in, QR passes, gate decisions and deletion (seed admin 3.1, 4.1, 4.2; CONTRACT §5)."""
import asyncio
import io
import json

import pytest
import redis.asyncio as aioredis
from PIL import Image

from tests.conftest import ADMIN_KEY, GATE_KEY, KIOSK_KEY
from tests.test_visits import RETINUES, application
from wxapp import gate, security, visits
from wxapp.context import build_context
from wxapp.koala import SubjectMark
from wxapp.nearcache import NearCache

HOUR = 3600


@pytest.fixture
def approved_visit(bind_visitor, bind_employee, clock, anonymous):
    """A visitor's application with two retinues, authorized by the employee; returns its id."""
    async def make(start_offset=-600, length=2 * HOUR, retinues=RETINUES):
        employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
        visitor = await bind_visitor("o-v1", "13900000001")
        now = int(clock())
        resp = await visitor.fetch("/v1/subject", "POST", json=application(
            "13900000001", now + start_offset, now + start_offset + length, retinues=retinues))
        rid = resp.json()["data"]["id"]
        assert (await employee.fetch(f"/v1/auth/{rid}", "PUT")).json()["code"] == 0
        return rid
    return make


async def signin(anonymous, phone, key=KIOSK_KEY):
    return await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": phone}, key=key)


async def check(anonymous, qrcode, key=GATE_KEY, gate="east-1"):
    return (await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode, "gate": gate}, key=key)).json()


@pytest.mark.gen_test
async def test_signin_with_a_retinue_phone_writes_everyone_into_koala(approved_visit, anonymous, fakes, ctx):
    rid = await approved_visit()
    resp = await signin(anonymous, "137 0000 0012")
    assert resp.status == 200, resp
    data = resp.json()["data"]
    assert data["id"] == rid and data["name"] == "张三" and data["signin_time"] > 0
    visitors = {v["phone"]: v for v in fakes.koala.visitors()}
    assert set(visitors) == {"13900000001", "13700000011", "13700000012"}
    record = await ctx.storage.db.records.find_one({"_id": rid})
    for person in [data, *data["retinues"]]:
        koala = visitors[person["phone"]]
        assert person["subject_id"] == koala["id"]
        assert (koala["subject_type"], koala["start_time"], koala["end_time"]) == (
            1, record["start_time"], record["end_time"])
        assert koala["interviewee"] == "李经理"
        content = json.loads(person["qrcode"])
        assert content["id"] == rid and len(content["qrcode"]) >= 22  # ≥ 128 bits
        assert person["qrcode_img_url"] == f"https://visit.example.com/qrcode/{content['qrcode']}.png"
    tokens = [json.loads(p["qrcode"])["qrcode"] for p in [data, *data["retinues"]]]
    assert len(set(tokens)) == 3


@pytest.mark.gen_test
async def test_signin_notifies_visitor_and_employee_once(approved_visit, anonymous, ctx):
    rid = await approved_visit()
    await signin(anonymous, "13900000001")
    await signin(anonymous, "13900000001")
    ids = {d["_id"] for d in await ctx.storage.db.outbox.find({}).to_list(None)}
    assert {f"signin_to_visitor:{rid}:wechat", f"signin_to_visitor:{rid}:sms",
            f"visitor_signin_to_employee:{rid}:wechat", f"visitor_signin_to_employee:{rid}:sms"} <= ids
    assert await ctx.storage.db.outbox.count_documents({"event": {"$in": [
        "signin_to_visitor", "visitor_signin_to_employee"]}}) == 4


@pytest.mark.gen_test
async def test_signing_in_again_returns_the_same_passes(approved_visit, anonymous, fakes):
    await approved_visit()
    first = (await signin(anonymous, "13900000001")).json()["data"]
    second = (await signin(anonymous, "13700000011")).json()["data"]
    assert second == first
    assert len(fakes.koala.visitors()) == 3


@pytest.mark.gen_test
async def test_two_kiosks_at_the_same_moment_make_one_set_of_passes(approved_visit, anonymous, fakes):
    await approved_visit()
    fakes.koala.delay = 0.05
    answers = await asyncio.gather(*(signin(anonymous, phone) for phone in
                                     ["13900000001", "13700000011", "13700000012", "13900000001"]))
    datas = [a.json()["data"] for a in answers]
    assert all(d == datas[0] for d in datas)
    assert len(fakes.koala.visitors()) == 3


@pytest.mark.gen_test
async def test_koala_failing_midway_is_502_and_a_retry_reuses_what_was_created(approved_visit, anonymous,
                                                                               fakes, ctx):
    rid = await approved_visit()
    fakes.koala.fail_create_after(1)
    failed = await signin(anonymous, "13900000001")
    assert failed.status == 502
    assert "考拉" in failed.json()["err_msg"]
    record = await ctx.storage.db.records.find_one({"_id": rid})
    assert record["signin_time"] == 0 and record["tokens"] == []
    assert await ctx.storage.db.outbox.count_documents({"event": "signin_to_visitor"}) == 0
    fakes.koala.reset()
    ok = await signin(anonymous, "13900000001")
    assert ok.json()["code"] == 0
    assert len(fakes.koala.visitors()) == 3


async def koala_ids(ctx, rid) -> list[int]:
    """The Koala subject id recorded for each person of a record, the visitor first."""
    record = await ctx.storage.db.records.find_one({"_id": rid})
    return [p["koala_id"] for p in [record, *record["retinues"]]]


async def until_visitors(fakes, n: int) -> None:
    """Wait (keeping the fakes turning) until the local Koala holds `n` visitor subjects."""
    for _ in range(100):
        if len(fakes.koala.visitors()) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"Koala holds {len(fakes.koala.visitors())} visitors, not {n}")


@pytest.mark.config(http_timeout=1.0)
@pytest.mark.gen_test
async def test_a_create_answered_after_the_timeout_leaves_one_subject_per_person_after_a_retry(
        approved_visit, anonymous, fakes, ctx):
    rid = await approved_visit()
    fakes.koala.delay = 1.5
    assert (await signin(anonymous, "13900000001")).status == 502
    fakes.koala.delay = 0
    await until_visitors(fakes, 1)  # Koala made the subject after the sign-in gave up on it
    ok = await signin(anonymous, "13900000001")
    assert ok.json()["code"] == 0
    assert sorted(v["id"] for v in fakes.koala.visitors()) == sorted(await koala_ids(ctx, rid))
    assert sorted(v["phone"] for v in fakes.koala.visitors()) == ["13700000011", "13700000012", "13900000001"]


@pytest.mark.config(http_timeout=1.0)
@pytest.mark.gen_test
async def test_a_retry_before_the_late_create_lands_leaves_a_duplicate_the_reconciliation_removes(
        approved_visit, anonymous, fakes, ctx):
    rid = await approved_visit()
    fakes.koala.delay = 1.5
    assert (await signin(anonymous, "13900000001")).status == 502
    fakes.koala.delay = 0
    assert (await signin(anonymous, "13900000001")).json()["code"] == 0
    await until_visitors(fakes, 4)  # the first create lands after the retry
    assert await ctx.visits.reconcile_koala_subjects() == 1
    assert sorted(v["id"] for v in fakes.koala.visitors()) == sorted(await koala_ids(ctx, rid))


@pytest.mark.gen_test
async def test_a_dropped_create_answer_leaves_one_subject_per_person_after_a_retry(approved_visit, anonymous,
                                                                                  fakes, ctx):
    rid = await approved_visit()
    fakes.koala.drop_answers(1, method="POST", path="/subject")
    failed = await signin(anonymous, "13900000001")
    assert failed.status == 502 and "考拉" in failed.json()["err_msg"]
    assert len(fakes.koala.visitors()) == 1
    assert (await signin(anonymous, "13900000001")).json()["code"] == 0
    assert sorted(v["id"] for v in fakes.koala.visitors()) == sorted(await koala_ids(ctx, rid))
    assert await ctx.visits.reconcile_koala_subjects() == 0


@pytest.mark.gen_test
async def test_the_subjects_this_system_creates_carry_its_mark(approved_visit, anonymous, fakes, ctx):
    rid = await approved_visit()
    await signin(anonymous, "13900000001")
    marks = [SubjectMark.parse(v["remark"]) for v in fakes.koala.visitors()]
    assert {(m.system, m.record_id, m.person) for m in marks} == {(ctx.koala.system, rid, i) for i in range(3)}


@pytest.mark.gen_test
async def test_reconciliation_removes_our_orphans_after_a_grace_period_and_nothing_else(
        approved_visit, anonymous, fakes, ctx, clock):
    rid = await approved_visit()
    fakes.koala.drop_answers(1, method="POST", path="/subject")
    assert (await signin(anonymous, "13900000001")).status == 502  # nobody tries again
    orphan = fakes.koala.visitors()[0]
    # Subjects this system did not create: an employee, a visitor made by hand, another system's.
    fakes.koala.add_employee("王五", "13800000009")
    fakes.koala._add_subject(1, "手工访客", [], start_time=1, end_time=2, remark="前台登记")
    fakes.koala._add_subject(1, "别家访客", [], start_time=1, end_time=2,
                             remark=SubjectMark("0000beef", rid, 1, int(clock()) - 7200).text())
    # One of ours whose record is gone.
    gone = await ctx.koala.create_visitor(name="已删访客", phone="13900000077", start_time=int(clock()),
                                          end_time=int(clock()) + HOUR, interviewee="李经理",
                                          mark=ctx.koala.mark(rid + 1000, 0, clock()))
    before = {s["id"] for s in fakes.koala.subjects.values()}
    assert await ctx.visits.reconcile_koala_subjects() == 1  # the orphan may still be recorded by its sign-in
    assert {s["id"] for s in fakes.koala.subjects.values()} == before - {gone}
    clock.advance(601)
    assert await asyncio.gather(ctx.visits.reconcile_koala_subjects(), ctx.visits.reconcile_koala_subjects()) \
        in ([1, 0], [0, 1], [1, 1])  # two processes at once
    assert {s["id"] for s in fakes.koala.subjects.values()} == before - {gone, orphan["id"]}
    assert await koala_ids(ctx, rid) == [0, 0, 0]


@pytest.mark.gen_test
async def test_reconciliation_keeps_what_records_own_and_waits_out_koala_trouble(approved_visit, anonymous,
                                                                                 fakes, ctx, clock):
    await approved_visit()
    await signin(anonymous, "13900000001")
    clock.advance(601)
    assert await ctx.visits.reconcile_koala_subjects() == 0
    assert len(fakes.koala.visitors()) == 3
    fakes.koala.fail_next(1, status=503)
    assert await ctx.visits.reconcile_koala_subjects() == 0
    await ctx.system_settings.save_servers({"koala_ip": "", "koala_username": "", "koala_password": "",
                                            "cloud_url": "https://visit.example.com"})
    fakes.koala.reset()
    assert await ctx.visits.reconcile_koala_subjects() == 0
    assert fakes.koala.requests == []


@pytest.mark.gen_test
async def test_a_sign_in_slower_than_its_lock_keeps_it(approved_visit, anonymous, fakes, ctx, monkeypatch):
    rid = await approved_visit()
    monkeypatch.setattr(visits, "SIGNIN_LOCK_TTL", 1)
    fakes.koala.delay = 0.6  # three people: 1.8 s in Koala
    first = asyncio.ensure_future(signin(anonymous, "13900000001"))
    await asyncio.sleep(0.5)
    second = await signin(anonymous, "13700000011")
    assert second.status == 409  # the first kiosk still holds the record
    assert (await first).json()["code"] == 0
    assert sorted(v["id"] for v in fakes.koala.visitors()) == sorted(await koala_ids(ctx, rid))


@pytest.mark.gen_test
async def test_a_subject_recorded_meanwhile_is_kept_and_the_surplus_one_removed(approved_visit, anonymous,
                                                                               fakes, ctx):
    rid = await approved_visit()
    recorded = fakes.koala._add_subject(1, "张三", [], start_time=1, end_time=2)
    fakes.koala.delay = 0.3
    signing = asyncio.ensure_future(signin(anonymous, "13900000001"))
    await asyncio.sleep(0.15)  # the visitor's create is under way; another sign-in records a subject
    await ctx.storage.db.records.update_one({"_id": rid}, {"$set": {"koala_id": recorded["id"]}})
    assert (await signing).json()["code"] == 0
    ids = await koala_ids(ctx, rid)
    assert ids[0] == recorded["id"]
    assert sorted(v["id"] for v in fakes.koala.visitors()) == sorted(ids)


@pytest.mark.gen_test
async def test_no_approved_visit_today_is_404(bind_visitor, bind_employee, clock, anonymous):
    await bind_employee("o-e1", "李经理", "13800000002")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    await visitor.fetch("/v1/subject", "POST", json=application("13900000001", now + 60, now + HOUR))
    resp = await signin(anonymous, "13900000001")
    assert resp.status == 404
    assert resp.json()["err_msg"] == "今天没有已审批的预约"
    assert (await signin(anonymous, "13911112222")).status == 404


@pytest.mark.gen_test
async def test_signin_prefers_the_visit_happening_now(bind_visitor, bind_employee, clock, anonymous):
    employee = await bind_employee("o-e1", "李经理", "13800000002")
    await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    clock.advance(-60)  # both applications are made a minute earlier
    later = (await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now + 30, now + 40, proposer="13800000002"))).json()["data"]["id"]
    current = (await employee.fetch("/v1/subject", "POST", json=application(
        "13900000001", now - 30, now + 20, proposer="13800000002"))).json()["data"]["id"]
    clock.advance(60)
    assert (await signin(anonymous, "13900000001")).json()["data"]["id"] == current
    assert later != current


@pytest.mark.gen_test
async def test_gate_decisions_through_the_day(gate_path, approved_visit, anonymous, clock, ctx):
    clock.to_local_hour(10)  # the visit, an hour from now, is today's
    rid = await approved_visit(start_offset=HOUR, length=HOUR)
    data = (await signin(anonymous, "13900000001")).json()["data"]
    token = json.loads(data["qrcode"])["qrcode"]
    retinue_qr = data["retinues"][0]["qrcode"]
    assert await check(anonymous, data["qrcode"]) == {"code": -202, "err_msg": "未到访问时间"}
    clock.advance(HOUR + 1)
    assert await check(anonymous, data["qrcode"]) == {"code": 0, "err_msg": ""}
    assert (await check(anonymous, token))["code"] == 0  # the bare token works too
    assert (await check(anonymous, retinue_qr))["code"] == 0
    clock.advance(HOUR)
    assert await check(anonymous, data["qrcode"]) == {"code": -209, "err_msg": "通行权限已过期"}
    await ctx.pass_log.flush()
    logged = list(reversed(await ctx.pass_log.entries(record_id=rid)))
    assert [p["code"] for p in logged] == [-202, 0, 0, 0, -209]
    assert {p["gate"] for p in logged} == {"east-1"} and logged[0]["key_name"] == "gate (API_KEYS)"
    assert logged[3]["person"] == 1


@pytest.mark.parametrize("qrcode", [
    "no-such-token-0123456789", '{"id": 1, "qrcode": "no-such-token-0123456789"}', "{not json", "", "短",
    '{"id": "1", "qrcode": 5}',
])
@pytest.mark.gen_test
async def test_unknown_or_malformed_codes_are_refused(gate_path, configured, anonymous, qrcode):
    resp = await anonymous.fetch("/v1/visit/qrcode", "POST", json={"qrcode": qrcode}, key=GATE_KEY)
    assert resp.status in (200, 400)
    if resp.status == 200:
        assert resp.json() == {"code": -201, "err_msg": "二维码无效"}


@pytest.mark.gen_test
async def test_a_token_shown_with_another_record_id_is_refused(gate_path, approved_visit, anonymous):
    rid = await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    token = json.loads(data["qrcode"])["qrcode"]
    assert (await check(anonymous, json.dumps({"id": rid + 1, "qrcode": token})))["code"] == -201


@pytest.mark.gen_test
async def test_gate_answers_from_mongodb_when_the_cache_is_gone(gate_path, approved_visit, anonymous, ctx):
    await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    await ctx.redis.flushdb()
    assert (await check(anonymous, data["qrcode"]))["code"] == 0


@pytest.mark.gen_test
async def test_a_cached_gate_decision_makes_no_mongodb_query(gate_path, approved_visit, anonymous, ctx):
    await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    assert (await check(anonymous, data["qrcode"]))["code"] == 0  # the key's role is cached now
    await ctx.pass_log.flush()
    before = (await ctx.storage.client.admin.command("serverStatus"))["opcounters"]
    assert (await check(anonymous, data["qrcode"]))["code"] == 0
    after = (await ctx.storage.client.admin.command("serverStatus"))["opcounters"]
    assert after["query"] == before["query"]
    assert after["command"] - before["command"] == 1  # the serverStatus itself


@pytest.mark.gen_test
async def test_deleting_a_record_stops_its_passes_at_once_and_removes_koala_subjects(gate_path, approved_visit,
                                                                                     anonymous, fakes, ctx):
    rid = await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    assert (await check(anonymous, data["qrcode"]))["code"] == 0
    resp = await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
    assert resp.json() == {"code": 0, "err_msg": ""}
    assert await check(anonymous, data["qrcode"]) == {"code": -204, "err_msg": "无通行权限"}
    await ctx.redis.flushdb()
    assert (await check(anonymous, data["retinues"][1]["qrcode"]))["code"] == -204
    assert fakes.koala.visitors() == []
    assert (await anonymous.fetch(data["qrcode_img_url"])).status == 404
    assert (await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)).status == 404


@pytest.mark.gen_test
async def test_deleting_while_koala_is_down_succeeds_and_koala_is_cleaned_later(approved_visit, anonymous,
                                                                                fakes, ctx):
    rid = await approved_visit()
    await signin(anonymous, "13900000001")
    fakes.koala.fail_next(10, status=503)
    resp = await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
    assert resp.json()["code"] == 0
    assert len(fakes.koala.visitors()) == 3
    fakes.koala.reset()
    assert await ctx.visits.remove_koala_subjects() == 3
    assert fakes.koala.visitors() == []
    assert await ctx.storage.db.koala_cleanup.count_documents({}) == 0


@pytest.mark.gen_test
async def test_qr_images_are_pngs_large_enough_to_scan(approved_visit, anonymous):
    await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    resp = await anonymous.fetch(data["retinues"][0]["qrcode_img_url"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(resp.body))
    assert image.format == "PNG" and min(image.size) >= 240
    assert (await anonymous.fetch("/qrcode/AAAAAAAAAAAAAAAAAAAAAA.png")).status == 404


@pytest.mark.gen_test
async def test_records_show_passes_after_signin(approved_visit, anonymous):
    rid = await approved_visit()
    before = (await anonymous.fetch("/v1/visit/records?type=web", key=ADMIN_KEY)).json()["data"][0]
    assert before["qrcode"] == "" and before["signin_time"] == 0
    data = (await signin(anonymous, "13900000001", key=ADMIN_KEY)).json()["data"]
    after = (await anonymous.fetch("/v1/visit/records?type=web", key=ADMIN_KEY)).json()["data"][0]
    assert after["id"] == rid
    assert after["qrcode"] == data["qrcode"] and after["retinues"][1]["qrcode"] == data["retinues"][1]["qrcode"]


# --- the near cache: gate facts held in each process, dropped on any change ---------------------

async def until(predicate, seconds=3.0):
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


class CountingRedis:
    """A Redis client counting the reads made through it."""

    def __init__(self, redis):
        self.redis, self.reads = redis, 0

    def __getattr__(self, name):
        return getattr(self.redis, name)

    async def get(self, key):
        self.reads += 1
        return await self.redis.get(key)

    async def mget(self, keys):
        self.reads += 1
        return await self.redis.mget(keys)


@pytest.mark.gen_test
async def test_with_the_near_cache_a_repeated_scan_costs_no_redis_round_trip(gate_path, approved_visit, anonymous, ctx,
                                                                             background, monkeypatch):
    await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    background.start()
    assert await until(lambda: ctx.near.live)
    assert (await check(anonymous, data["qrcode"]))["code"] == 0  # fills this process's cache
    for reader in (ctx.api_keys, ctx.gate_cache):
        monkeypatch.setattr(reader, "redis", CountingRedis(reader.redis))
    for _ in range(3):
        assert (await check(anonymous, data["qrcode"]))["code"] == 0
    assert ctx.api_keys.redis.reads == ctx.gate_cache.redis.reads == 0


@pytest.mark.gen_test
async def test_a_deletion_reaches_the_near_cache_of_every_process(approved_visit, anonymous, ctx, config, clock):
    rid = await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    process = await build_context(config, clock=clock)  # a second server process on the same databases
    process.background.start()
    other = process.services
    try:
        assert await until(lambda: other.near.live)
        key = gate.cache_key(json.loads(data["qrcode"])["qrcode"])
        _, values = await other.api_keys.authenticate(GATE_KEY, [key])
        assert gate.decide(json.loads(values[key]), rid, clock()) == 0
        assert other.near.get(key) is not None
        await anonymous.fetch(f"/v1/visit/records/{rid}", "DELETE", key=ADMIN_KEY)
        assert await until(lambda: other.near.get(key) is None)
        _, values = await other.api_keys.authenticate(GATE_KEY, [key])
        assert gate.decide(json.loads(values[key]), rid, clock()) == -204
    finally:
        await process.close()


@pytest.mark.gen_test
async def test_a_quiet_change_channel_keeps_the_near_cache(config):
    # The server's Redis client gives up on a read after its socket timeout; a channel with no
    # changes for longer than that must not be taken for a lost one (the cache would be emptied).
    client = aioredis.Redis.from_url(config.redis_url, decode_responses=True, socket_timeout=0.3)
    near = NearCache(client, poll=0.1)
    listener = asyncio.get_running_loop().create_task(near.listen())
    try:
        assert await until(lambda: near.live)
        near.put("k", "v", near.generation)
        await asyncio.sleep(1.0)  # over three socket timeouts without a message
        assert near.live and near.get("k") == "v"
        await near.changed(["k"])
        assert near.get("k") is None
    finally:
        listener.cancel()
        await client.aclose()


@pytest.mark.gen_test
async def test_without_its_change_channel_a_process_holds_nothing(ctx):
    assert not ctx.near.live  # the listener is not running
    ctx.near.put("k", "v", ctx.near.generation)
    assert ctx.near.get("k") is None


@pytest.mark.gen_test
async def test_a_revoked_key_stops_at_once_in_another_process(ctx, config, clock):
    process = await build_context(config, clock=clock)
    process.background.start()
    other = process.services
    try:
        assert await until(lambda: other.near.live)
        doc, key = await ctx.api_keys.create("gate", "东门")
        assert (await other.api_keys.authenticate(key))[0] is not None
        assert (await other.api_keys.authenticate(key))[0] is not None  # now from the near cache
        await ctx.api_keys.revoke(doc["_id"])
        assert await until(lambda: other.near.get(f"apikey:{security.hash_api_key(key)}") is None)
        assert (await other.api_keys.authenticate(key))[0] is None
    finally:
        await process.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_busy_gate_writes_one_log_bucket_per_interval_and_loses_nothing_at_shutdown(ctx):
    log = gate.PassLog(ctx.storage, interval=0.2)
    recorded = 0
    started = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - started < 1.0:  # a steady stream of scans for a second
        log.record({"time": ctx.clock(), "code": 0, "gate": "东门", "record_id": 1, "person": 0})
        recorded += 1
        await asyncio.sleep(0.002)
    await log.close()
    buckets = await ctx.storage.db.passes.find({}).to_list(None)
    assert sum(b["count"] for b in buckets) == recorded
    # Scans made while a bucket is being written wait for the next interval instead of being
    # written straight after it: about one bucket per 0.2 s, not a stream of small inserts.
    assert len(buckets) <= 8, [b["count"] for b in buckets]


@pytest.mark.gen_test(timeout=30)
async def test_decisions_made_while_the_gate_log_writes_are_written_without_another_scan(ctx):
    log = gate.PassLog(ctx.storage, interval=0.05)
    log.record({"time": ctx.clock(), "code": 0, "gate": "东门", "record_id": 1, "person": 0})
    while log._sleeping:  # until the first bucket is being written
        await asyncio.sleep(0.001)
    log.record({"time": ctx.clock(), "code": -203, "gate": "东门", "record_id": 1, "person": 1})
    # The gate goes quiet: no further scan comes to start another write.
    assert await until(lambda: log._task.done(), seconds=5)
    buckets = await ctx.storage.db.passes.find({}).to_list(None)
    assert [e["code"] for b in buckets for e in b["entries"]] == [0, -203]
    await log.close()


@pytest.mark.gen_test
async def test_gate_log_buckets_of_an_earlier_version_are_found_by_record_after_an_upgrade(ctx):
    entry = {"time": ctx.clock(), "code": 0, "gate": "东门", "record_id": 7, "person": 0}
    await ctx.storage.db.passes.insert_one({"time": entry["time"], "until": entry["time"], "count": 1,
                                         "entries": [entry]})  # as written before record_ids
    await ctx.storage.db.passes.create_index([("entries.record_id", 1), ("time", -1)], name="record")
    await ctx.pass_log.upgrade()
    assert [e["gate"] for e in await ctx.pass_log.entries(record_id=7)] == ["东门"]
    assert "record" not in await ctx.storage.db.passes.index_information()
    await ctx.pass_log.upgrade()  # nothing left to do
