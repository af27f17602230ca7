"""Name and interviewee search as substrings, served by an index of each record's character grams."""
import pytest

from tests.conftest import ADMIN_KEY
from tests.test_storage import assert_indexed
from tests.test_visits import application
from wxapp.visits import SORT, search_grams


def stored(rid: int, name: str, interviewee: str = "李经理", start: int = 1000) -> dict:
    return {"_id": rid, "name": name, "interviewee": interviewee, "phone": f"1390000{rid:04d}",
            "start_time": start + rid, "end_time": start + rid + 3600, "retinues": [], "is_auth": 0,
            "signin_time": 0, "purpose": 0, "remark": "", "come_from": "", "proposer": f"1390000{rid:04d}",
            "interviewee_phone": "13800000002", "status": "pending"}


async def names(anonymous, query: str) -> list[str]:
    resp = await anonymous.fetch(f"/v1/visit/records?type=web&size=100&{query}", key=ADMIN_KEY)
    assert resp.json()["code"] == 0, resp
    return sorted(r["name"] for r in resp.json()["data"])


@pytest.mark.gen_test
async def test_any_substring_of_a_name_finds_it_through_the_index(ctx, anonymous):
    people = ["张三", "张三丰", "王小明", "Tom Lee", "欧阳娜娜"]
    await ctx.storage.db.records.insert_many(
        [{**stored(i, name), "grams": search_grams({"name": name, "interviewee": "李经理"})}
         for i, name in enumerate(people, 1)])
    assert await names(anonymous, "name=张") == ["张三", "张三丰"]
    assert await names(anonymous, "name=三丰") == ["张三丰"]
    assert await names(anonymous, "name=阳娜娜") == ["欧阳娜娜"]
    assert await names(anonymous, "name=tom%20l") == ["Tom Lee"]
    assert await names(anonymous, "name=小红") == []
    assert len(await names(anonymous, "interviewee=经理")) == 5
    for text in ("张", "三丰", "tom l"):
        query = await ctx.visits.index_query(ctx.visits.filters({"name": text}))
        assert "grams" in query
        await assert_indexed(ctx.storage.db.records, query, SORT)


@pytest.mark.gen_test
async def test_records_stored_before_the_index_are_found_after_a_restart(ctx, anonymous):
    await ctx.storage.db.records.insert_many([stored(1, "赵六"), stored(2, "钱七")])
    await ctx.storage.db.counters.delete_one({"_id": "record_grams"})
    await ctx.visits.ensure_grams(batch=1)
    assert await names(anonymous, "name=赵") == ["赵六"]
    assert await names(anonymous, "name=七") == ["钱七"]


@pytest.mark.gen_test
async def test_an_application_is_found_by_part_of_its_name(bind_visitor, bind_employee, clock, anonymous):
    await bind_employee("o-e1", "李经理", "13800000002", "市场部")
    visitor = await bind_visitor("o-v1", "13900000001")
    now = int(clock())
    resp = await visitor.fetch("/v1/subject", "POST", json=application("13900000001", now + 60, now + 3600))
    assert resp.json()["code"] == 0, resp
    assert await names(anonymous, "name=三") == ["张三"]
