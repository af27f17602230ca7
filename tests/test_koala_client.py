"""The Koala client against the local fake Koala: lookups, visitors, photos, sessions and failures."""
import time

import pytest

from tests.fakes.base import make_jpeg
from wxapp.koala import KoalaClient, KoalaError, KoalaNotConfigured, SubjectMark


async def configure(ctx, fakes, **overrides) -> None:
    """Save the servers settings pointing at the fake Koala."""
    await ctx.system_settings.save_servers({
        "koala_ip": fakes.koala.url.removeprefix("http://").rstrip("/"),
        "koala_username": fakes.koala.username,
        "koala_password": fakes.koala.password,
        "cloud_url": "https://visit.example.com",
        **overrides,
    })


def new_client(ctx, timeout: float = 2) -> KoalaClient:
    return KoalaClient(ctx.system_settings.koala_account, ctx.redis, timeout=timeout)


@pytest.fixture
def koala(io_loop, ctx, fakes) -> KoalaClient:
    """A client of the fake Koala, configured through the servers settings."""
    io_loop.run_sync(lambda: configure(ctx, fakes))
    return new_client(ctx)


def visit_window() -> tuple[int, int]:
    start = int(time.time())
    return start, start + 2 * 3600


@pytest.mark.gen_test
async def test_finds_an_employee_by_exact_name_and_phone(koala, fakes):
    fakes.koala.add_employee("张三丰", "13800138000")
    zhang = fakes.koala.add_employee("张三", "13800138001", department="研发部")
    found = await koala.find_employee("张三", "13800138001")
    assert found["id"] == zhang["id"]
    assert found["department"] == "研发部"


@pytest.mark.gen_test
async def test_phone_formats_are_compared_normalised(koala, fakes):
    zhang = fakes.koala.add_employee("张三", "138-0013-8001")
    assert (await koala.find_employee("张三", "+86 138 0013 8001"))["id"] == zhang["id"]
    assert (await koala.find_employee("张三", "8613800138001"))["id"] == zhang["id"]


@pytest.mark.gen_test
async def test_wrong_phone_or_partial_name_finds_nobody(koala, fakes):
    fakes.koala.add_employee("张三丰", "13800138001")
    assert await koala.find_employee("张三", "13800138001") is None
    assert await koala.find_employee("张三丰", "13800138009") is None
    assert await koala.find_employee("张三丰", "") is None


@pytest.mark.gen_test
async def test_finds_an_employee_on_the_second_page(koala, fakes):
    for i in range(104):
        fakes.koala.add_employee(f"王{i}", f"1390000{i:04d}")
    wang = fakes.koala.add_employee("王", "13912345678")
    assert (await koala.find_employee("王", "13912345678"))["id"] == wang["id"]
    pages = [r["query"]["page"] for r in fakes.koala.requests_to("/mobile-admin/subjects/list")]
    assert pages == ["1", "2"]


@pytest.mark.gen_test
async def test_creates_a_visitor_with_the_visit_window(koala, fakes):
    start, end = visit_window()
    subject_id = await koala.create_visitor(name="李四", phone="13700137000", start_time=start, end_time=end,
                                            interviewee="张三", come_from="某公司", purpose=1, remark="面试")
    visitor = fakes.koala.subjects[subject_id]
    assert visitor["subject_type"] == 1
    assert (visitor["name"], visitor["phone"], visitor["interviewee"]) == ("李四", "13700137000", "张三")
    assert (visitor["start_time"], visitor["end_time"]) == (start, end)
    assert (visitor["come_from"], visitor["purpose"], visitor["remark"]) == ("某公司", 1, "面试")
    assert visitor["photos"] == []


@pytest.mark.gen_test
async def test_creates_a_visitor_with_a_photo(koala, fakes):
    photo = make_jpeg("李四的脸")
    start, end = visit_window()
    subject_id = await koala.create_visitor(name="李四", phone="13700137000", start_time=start, end_time=end,
                                            interviewee="张三", photo=photo)
    visitor = fakes.koala.subjects[subject_id]
    assert len(visitor["photos"]) == 1
    assert fakes.koala.avatar_bytes(visitor) == photo


@pytest.mark.gen_test
async def test_koala_refusing_a_visitor_is_an_error_with_its_reason(koala, fakes):
    start, _ = visit_window()
    with pytest.raises(KoalaError) as err:
        await koala.create_visitor(name="李四", phone="13700137000", start_time=start, end_time=start,
                                   interviewee="张三")
    assert err.value.message == "考拉返回错误：结束时间必须晚于开始时间"
    assert fakes.koala.visitors() == []


@pytest.mark.gen_test
async def test_deletes_a_visitor_and_a_missing_one_is_fine(koala, fakes):
    start, end = visit_window()
    subject_id = await koala.create_visitor(name="李四", phone="13700137000", start_time=start, end_time=end,
                                            interviewee="张三")
    await koala.delete_subject(subject_id)
    assert subject_id not in fakes.koala.subjects
    await koala.delete_subject(subject_id)


@pytest.mark.gen_test
async def test_fetches_an_employee_avatar(koala, fakes):
    face = make_jpeg("张三的脸")
    fakes.koala.add_employee("张三", "13800138001", avatar_bytes=face)
    employee = await koala.find_employee("张三", "13800138001")
    assert await koala.fetch_image(employee["avatar"]) == (face, "image/jpeg")


@pytest.mark.gen_test
async def test_missing_avatar_is_an_error(koala, fakes):
    with pytest.raises(KoalaError) as err:
        await koala.fetch_image("/static/upload/avatar/nobody.jpg")
    assert err.value.message == "考拉返回错误：文件不存在"


@pytest.mark.gen_test
async def test_avatar_on_another_host_is_refused_without_sending_the_session(koala, fakes):
    with pytest.raises(KoalaError):
        await koala.fetch_image("http://evil.example.com/static/upload/avatar/x.jpg")


@pytest.mark.gen_test
async def test_logs_in_again_once_when_the_session_expires(koala, fakes):
    fakes.koala.add_employee("张三", "13800138001")
    assert await koala.find_employee("张三", "13800138001")
    before = fakes.koala.logins
    fakes.koala.expire_sessions()
    assert await koala.find_employee("张三", "13800138001")
    assert fakes.koala.logins == before + 1


@pytest.mark.gen_test
async def test_a_session_refused_right_after_login_is_an_error_not_a_loop(koala, fakes):
    class Forgetful(set):
        def add(self, item):
            """Koala accepts the login but never the session."""

    fakes.koala.sessions = Forgetful()
    with pytest.raises(KoalaError) as err:
        await koala.find_employee("张三", "13800138001")
    assert err.value.message == "考拉拒绝访问，请检查考拉账号设置"
    assert fakes.koala.logins == 2


@pytest.mark.gen_test
async def test_two_clients_share_one_login_through_redis(ctx, fakes):
    await configure(ctx, fakes)
    first, second = new_client(ctx), new_client(ctx)
    await first.find_employee("张三", "13800138001")
    await second.find_employee("张三", "13800138001")
    assert fakes.koala.logins == 1


@pytest.mark.gen_test
async def test_changing_the_koala_address_forces_a_new_login(koala, ctx, fakes):
    await koala.find_employee("张三", "13800138001")
    await configure(ctx, fakes, koala_ip=f"localhost:{fakes.koala.port}")
    await koala.find_employee("张三", "13800138001")
    assert fakes.koala.logins == 2


@pytest.mark.gen_test
async def test_check_logs_in_afresh(koala, fakes):
    await koala.find_employee("张三", "13800138001")
    await koala.check()
    assert fakes.koala.logins == 2


@pytest.mark.gen_test
async def test_wrong_password_is_a_login_error_in_chinese(ctx, fakes):
    await configure(ctx, fakes, koala_password="wrong")
    for call in (new_client(ctx).check, lambda: new_client(ctx).find_employee("张三", "13800138001")):
        with pytest.raises(KoalaError) as err:
            await call()
        assert err.value.message == "考拉登录失败：用户名或密码错误"


@pytest.mark.gen_test
async def test_koala_server_error_is_unavailable(koala, fakes):
    await koala.check()
    fakes.koala.fail_next(1, 500)
    with pytest.raises(KoalaError) as err:
        await koala.find_employee("张三", "13800138001")
    assert err.value.message == "考拉系统暂时无法访问"


@pytest.mark.gen_test
async def test_koala_down_is_unavailable(koala, fakes):
    fakes.koala.stop()
    with pytest.raises(KoalaError) as err:
        await koala.check()
    assert err.value.message == "考拉系统暂时无法访问"


@pytest.mark.gen_test
async def test_slow_koala_times_out_as_unavailable(ctx, fakes):
    await configure(ctx, fakes)
    client = new_client(ctx, timeout=0.3)
    await client.check()
    fakes.koala.delay = 1
    started = time.monotonic()
    with pytest.raises(KoalaError) as err:
        await client.find_employee("张三", "13800138001")
    assert err.value.message == "考拉系统暂时无法访问"
    assert time.monotonic() - started < 0.9


@pytest.mark.gen_test
async def test_not_configured_koala_is_reported(ctx, fakes):
    with pytest.raises(KoalaNotConfigured) as err:
        await new_client(ctx).find_employee("张三", "13800138001")
    assert err.value.message == "考拉系统尚未配置"
    assert fakes.koala.requests == []


@pytest.mark.gen_test
async def test_a_marked_visitor_is_recognised_by_its_mark(ctx, fakes):
    await configure(ctx, fakes)
    ours, theirs = new_client(ctx), new_client(ctx)
    ours.system, theirs.system = "0a1b2c3d", "ffff0000"
    start, end = visit_window()
    mark = ours.mark(42, 1, start)
    subject_id = await ours.create_visitor(name="李四", phone="13700137000", start_time=start, end_time=end,
                                           interviewee="张三", remark="面试", mark=mark)
    assert fakes.koala.subjects[subject_id]["remark"] == f"{mark.text()} 面试"
    await theirs.create_visitor(name="李四", phone="13700137001", start_time=start, end_time=end,
                                interviewee="张三", mark=theirs.mark(42, 1, start))
    await ours.create_visitor(name="李四光", phone="13700137002", start_time=start, end_time=end, interviewee="张三")
    fakes.koala.add_employee("李四", "13800138001")
    found = await ours.marked_visitors("李四")
    assert [(s["id"], m) for s, m in found] == [(subject_id, mark)]
    assert (mark.system, mark.record_id, mark.person, mark.at) == ("0a1b2c3d", 42, 1, start)
    assert [s["name"] for s, _ in await theirs.marked_visitors()] == ["李四"]


@pytest.mark.gen_test
async def test_marked_visitors_are_read_page_by_page(koala, fakes):
    start, end = visit_window()
    for i in range(130):
        fakes.koala._add_subject(1, f"访客{i}", [], start_time=start, end_time=end,
                                 remark=koala.mark(i, 0, start).text())
    assert sorted(m.record_id for _, m in await koala.marked_visitors()) == list(range(130))
    assert [r["query"]["page"] for r in fakes.koala.requests_to("/mobile-admin/subjects/list")] == ["1", "2"]


def test_a_remark_without_our_mark_is_not_taken_for_one():
    assert SubjectMark.parse("前台登记") is None
    assert SubjectMark.parse(None) is None
    assert SubjectMark.parse("备注 访客预约#ab-1-0-5") is None  # only at the head
    assert SubjectMark.parse("访客预约#ab-1-0-5 备注") == SubjectMark("ab", 1, 0, 5)
