"""An application stores the truth or nothing: a refused one leaves no image behind, images nobody
names are swept, and the interviewee is the employee found by phone, not the name that was typed."""
import base64

import pytest

from tests.fakes.base import make_jpeg
from wxapp.images import SWEEP_GRACE

HOUR = 3600


def photo(seed: str) -> str:
    return base64.b64encode(make_jpeg(seed)).decode()


def body(clock, *, interviewee="李经理", interviewee_phone="13800000002", phone="13900000001", retinues=(),
         **extra) -> dict:
    now = int(clock())
    return {"subject_type": 1, "name": "张三", "phone": phone, "proposer": phone, "interviewee": interviewee,
            "interviewee_phone": interviewee_phone, "start_time": now + HOUR, "end_time": now + 3 * HOUR,
            "retinues": list(retinues), **extra}


async def count(ctx, collection: str) -> int:
    return await ctx.storage.db[collection].count_documents({})


@pytest.mark.gen_test(timeout=60)
async def test_an_application_refused_for_its_last_photo_stores_nothing(bind_visitor, bind_employee, clock, ctx):
    await bind_employee()
    visitor = await bind_visitor()
    images_before = await count(ctx, "images")  # the employee's avatar, copied out of Koala
    retinues = [{"name": f"随行{i}", "phone": f"1370000001{i}", "photo": photo(str(i))} for i in range(6)]
    retinues[-1]["photo"] = "this is not base64!"
    for _ in range(10):
        resp = await visitor.fetch("/v1/subject", "POST", json=body(clock, photo=photo("main"), retinues=retinues))
        assert resp.status == 400, resp
    assert await count(ctx, "images") == images_before
    assert "retinues[5].photo" in resp.json()["err_msg"]
    assert await count(ctx, "records") == 0 and await count(ctx, "outbox") == 0


@pytest.mark.gen_test
async def test_an_application_refused_for_its_interviewee_stores_no_photo(bind_visitor, clock, ctx):
    visitor = await bind_visitor()
    resp = await visitor.fetch("/v1/subject", "POST", json=body(
        clock, interviewee_phone="13800009999", photo=photo("main"),
        retinues=[{"name": "随行", "phone": "13700000011", "photo": photo("r")}]))
    assert resp.status == 404, resp
    assert await count(ctx, "images") == 0 and await count(ctx, "records") == 0


@pytest.mark.gen_test(timeout=60)
async def test_images_that_nothing_names_are_swept_after_a_grace_period(bind_visitor, bind_employee, clock, ctx,
                                                                       background):
    await bind_employee()  # its avatar is an image a binding names
    visitor = await bind_visitor()
    resp = await visitor.fetch("/v1/subject", "POST", json=body(
        clock, photo=photo("main"), retinues=[{"name": "随行", "phone": "13700000011", "photo": photo("r")}]))
    assert resp.json()["code"] == 0, resp
    named = {doc["_id"] for doc in await ctx.storage.db.images.find({}, {"_id": 1}).to_list(None)}
    assert len(named) == 3
    orphan = await ctx.images.save(make_jpeg("orphan"))  # as a failure between storing and recording leaves
    assert await ctx.visits.sweep_images() == 0  # too young: its record may be on its way
    clock.advance(SWEEP_GRACE + 1)
    later = await ctx.images.save(make_jpeg("later"))
    # A round of the periodic jobs sweeps: the old orphan goes, what is named stays, the young one waits.
    await background.run_jobs()
    left = {doc["_id"] for doc in await ctx.storage.db.images.find({}, {"_id": 1}).to_list(None)}
    assert left == named | {later}
    clock.advance(SWEEP_GRACE + 1)
    assert await ctx.visits.sweep_images() == 1
    assert await ctx.images.get(later) is None


@pytest.mark.gen_test
async def test_the_record_names_the_bound_interviewee_whatever_was_typed(bind_visitor, bind_employee, clock):
    await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor()
    resp = await visitor.fetch("/v1/subject", "POST", json=body(clock, interviewee="王总（CEO）"))
    data = resp.json()["data"]
    assert (data["interviewee"], data["department"], data["interviewee_phone"]) == ("李经理", "市场部", "13800000002")
    listed = await visitor.fetch("/v1/visit/records?type=mobile&proposer=13900000001&interviewee=王总")
    assert listed.json()["data"] == []


@pytest.mark.gen_test(timeout=60)
async def test_an_unbound_koala_employee_is_found_by_phone_alone(bind_visitor, fakes, clock):
    for i in range(150):  # more than one page of Koala's list
        fakes.koala.add_employee(f"员工{i:03d}", f"1360000{i:04d}", department="生产部")
    fakes.koala.add_employee("王建国", "13800000077", department="研发部")
    visitor = await bind_visitor()
    for typed in ("王总", "王建国", "Wang"):
        resp = await visitor.fetch("/v1/subject", "POST", json=body(
            clock, interviewee=typed, interviewee_phone="13800000077"))
        assert resp.json()["code"] == 0, resp
        data = resp.json()["data"]
        assert (data["interviewee"], data["department"]) == ("王建国", "研发部")


@pytest.mark.gen_test
async def test_an_invitation_names_the_inviting_employee(bind_employee, clock):
    employee = await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    resp = await employee.fetch("/v1/subject", "POST", json=body(
        clock, phone="13900000001", interviewee="随便写的", **{"proposer": "13800000002"}))
    data = resp.json()["data"]
    assert (data["interviewee"], data["department"], data["is_auth"]) == ("李经理", "市场部", 1)
