"""/admin/notifications (the outbox and its retry) and /admin/passes (the gate log), over HTTP."""
import datetime
import html
import re

import pytest

from tests.test_signin_and_gate import approved_visit, check, signin  # noqa: F401 (approved_visit: a fixture)
from wxapp.gate import PassLog

DAY = 86400


def rows(page) -> list[list[str]]:
    """The cells' texts of the page's table body, row by row."""
    body = re.search(r"<tbody>(.*?)</tbody>", page.text, re.S)
    return [[html.unescape(re.sub(r"<[^>]+>|\s+", " ", cell)).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1) if body else "", re.S)]


def earlier_link(page) -> str | None:
    """The "更早的记录" link of a gate log page, if it has one."""
    found = re.search(r'id="earlier" href="([^"]+)"', page.text)
    return html.unescape(found.group(1)) if found else None


def day_of(ctx, seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, ctx.config.tz).strftime("%Y-%m-%d")


def today_start(ctx) -> int:
    day = datetime.datetime.fromtimestamp(ctx.clock(), ctx.config.tz).date()
    return int(datetime.datetime.combine(day, datetime.time(), ctx.config.tz).timestamp())


async def retry(browser, entry_id: str, status: str = "", **kwargs):
    form = {"status": status, "_xsrf": browser.cookie("_xsrf")}
    return await browser.fetch(f"/admin/notifications/{entry_id}/retry", "POST", form=form, **kwargs)


@pytest.mark.parametrize("path", ["/admin/notifications?status=failed", "/admin/passes"])
@pytest.mark.gen_test
async def test_the_log_pages_need_an_admin_login(anonymous, path):
    resp = await anonymous.fetch(path)
    assert resp.status == 302 and resp.location.startswith("/admin/login?next=" + path.split("?")[0])


@pytest.mark.gen_test
async def test_a_retry_without_the_xsrf_field_is_refused(admin_login, journey, ctx):
    rid = await journey(sign_in=False)
    await ctx.storage.db.outbox.update_many({}, {"$set": {"status": "failed"}})
    browser = await admin_login()
    entry_id = f"approval_pass_to_visitor:{rid}:wechat"
    resp = await browser.fetch(f"/admin/notifications/{entry_id}/retry", "POST", form={"status": ""}, xsrf=False)
    assert resp.status == 403
    assert (await ctx.storage.db.outbox.find_one({"_id": entry_id}))["status"] == "failed"


@pytest.mark.gen_test
async def test_a_failed_notification_is_shown_and_sent_again(admin_login, journey, ctx, fakes):
    rid = await journey(sign_in=False)
    fakes.wechat.fail_template(43004, "require subscribe", times=1, openid="o-v1")
    await ctx.delivery.run_once()
    entry_id = f"approval_pass_to_visitor:{rid}:wechat"
    browser = await admin_login()
    page = await browser.fetch("/admin/notifications?status=failed")
    assert page.status == 200
    [row] = rows(page)
    assert row[1:6] == ["审批通过（访客）", "微信模板消息", "o-v1", f"#{rid}", "发送失败"]
    assert "43004" in row[7] and "重新发送" in row[9]
    assert f'href="/admin/records/{rid}"' in page.text

    resp = await retry(browser, entry_id.replace(":", "%3A"), "failed")
    assert resp.status == 302 and resp.location == "/admin/notifications?status=failed&done=retried"
    entry = await ctx.storage.db.outbox.find_one({"_id": entry_id})
    assert (entry["status"], entry["attempts"], entry["last_error"]) == ("pending", 0, "")
    after = await browser.fetch(resp.location)
    assert "通知已重新排队发送" in after.text and rows(after) == []  # none failed any more
    pending = rows(await browser.fetch("/admin/notifications?status=pending"))
    assert [r[5] for r in pending] == ["待发送"] and pending[0][8]  # with its next attempt time
    await ctx.delivery.run_once()
    assert (await ctx.storage.db.outbox.find_one({"_id": entry_id}))["status"] == "sent"


@pytest.mark.gen_test
async def test_only_failed_or_skipped_notifications_can_be_sent_again(admin_login, journey, ctx):
    rid = await journey(sign_in=False)
    await ctx.delivery.run_once()
    browser = await admin_login()
    page = await browser.fetch("/admin/notifications")
    assert "重新发送" not in page.text  # everything was sent
    resp = await retry(browser, f"approval_pass_to_visitor:{rid}:sms")
    assert resp.status == 409 and "只有发送失败或跳过的通知可以重新发送" in resp.text
    assert len(rows(resp)) == 4  # the list, with the message above it
    missing = await retry(browser, "approval_pass_to_visitor:999:sms")
    assert missing.status == 404 and "通知不存在" in missing.text


@pytest.mark.gen_test
async def test_the_status_filter_and_masked_phones(admin_login, journey, ctx):
    await journey()  # four events, each to WeChat and SMS
    await ctx.storage.db.outbox.update_many({"channel": "wechat"}, {"$set": {"status": "skipped"}})
    browser = await admin_login()
    everything = await browser.fetch("/admin/notifications")
    assert len(rows(everything)) == 8 and "全部通知，最新的在前" in everything.text
    texts = [cells[3] for cells in rows(everything)]
    assert {"139****0001", "138****0002"} <= set(texts)
    assert "13900000001" not in everything.text and "13800000002" not in everything.text
    skipped = rows(await browser.fetch("/admin/notifications?status=skipped"))
    assert len(skipped) == 4
    assert {r[2] for r in skipped} == {"微信模板消息"} and {r[5] for r in skipped} == {"已跳过"}
    assert all("重新发送" in r[9] for r in skipped)
    assert [r[2] for r in rows(await browser.fetch("/admin/notifications?status=pending"))] == ["短信"] * 4
    assert rows(await browser.fetch("/admin/notifications?status=sent")) == []
    assert (await browser.fetch("/admin/notifications?status=lost")).status == 400
    for cursor in ("before=x&id=a", "before=1&id=", "after=nan&id=a", "after=inf&id=a"):
        malformed = await browser.fetch(f"/admin/notifications?{cursor}")
        assert malformed.status == 400 and "翻页位置无效" in malformed.text, cursor


def link(page, name: str) -> str | None:
    """The href of the element with id `name` on a page, if it has one."""
    found = re.search(rf'id="{name}" href="([^"]+)"', page.text)
    return html.unescape(found.group(1)) if found else None


def entry(n: int, status: str, created_at: float, event: str = "signin_to_visitor") -> dict:
    return {"_id": f"{event}:{n}:sms", "event": event, "channel": "sms", "to": "13900000001", "record_id": n,
            "status": status, "attempts": 1, "last_error": "", "due_at": created_at, "created_at": created_at}


@pytest.mark.gen_test
async def test_notifications_are_paged_newest_first(admin_login, ctx, clock):
    now = clock()
    await ctx.storage.db.outbox.insert_many([entry(n, "sent" if n % 2 else "failed", now - 100 + n) for n in range(1, 51)])
    browser = await admin_login()
    first = await browser.fetch("/admin/notifications?status=failed")
    assert [r[4] for r in rows(first)] == [f"#{n}" for n in range(50, 10, -2)]
    assert link(first, "newer") is None and link(first, "latest") is None
    older = link(first, "older")
    assert older == f"/admin/notifications?status=failed&before={now - 100 + 12!r}&id=signin_to_visitor%3A12%3Asms"
    second = await browser.fetch(older)
    assert [r[4] for r in rows(second)] == [f"#{n}" for n in range(10, 0, -2)]
    assert link(second, "older") is None and link(second, "latest") == "/admin/notifications?status=failed"
    back = await browser.fetch(link(second, "newer"))  # fewer than a page is newer: the newest page
    assert [r[4] for r in rows(back)] == [r[4] for r in rows(first)] and link(back, "newer") is None
    refused = await retry(browser, "signin_to_visitor:1:sms", "failed")  # sent: 409, the list below the message
    assert refused.status == 409 and [r[4] for r in rows(refused)] == [r[4] for r in rows(first)]
    assert link(refused, "older") == older


@pytest.mark.gen_test(timeout=60)
async def test_notifications_page_to_older_ones_and_back_without_repeats_or_gaps(admin_login, ctx, clock):
    # 130 entries over four months, some of one state change at the same time, with a gap of weeks;
    # one in a minute's future (another process's clock) and a status of its own.
    now = clock()
    times = [now - 120 * DAY + (n // 3) * 7200 for n in range(60)] + [now - 20 * DAY + (n // 2) * 600 for n in range(70)]
    docs = [entry(n, "failed" if n % 5 == 0 else "sent", t) for n, t in enumerate(times, start=1)]
    docs.append(entry(999, "pending", now + 30, "cancel_to_visitor"))
    await ctx.storage.db.outbox.insert_many(docs)
    newest = [f"#{d['record_id']}" for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True)]
    browser = await admin_login()

    pages, url = [], "/admin/notifications"
    while url:
        page = await browser.fetch(url)
        assert page.status == 200 and (link(page, "newer") is None) == (not pages)
        pages.append(page)
        url = link(page, "older")
    assert [len(rows(p)) for p in pages] == [20] * 6 + [11]
    assert [r[4] for p in pages for r in rows(p)] == newest
    assert [r[0] for r in rows(pages[0])][0] == datetime.datetime.fromtimestamp(
        now + 30, ctx.config.tz).strftime("%Y-%m-%d %H:%M:%S")[:len(rows(pages[0])[0][0])]
    # Back from the oldest page, page by page, to the newest.
    page, shown = pages[-1], []
    while (url := link(page, "newer")):
        page = await browser.fetch(url)
        shown.append([r[4] for r in rows(page)])
    assert shown == [[r[4] for r in rows(p)] for p in pages[-2::-1]]
    assert link(page, "latest") is None

    # The status filter is kept across the links.
    failed = [f"#{d['record_id']}" for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True)
              if d["status"] == "failed"]
    first = await browser.fetch("/admin/notifications?status=failed")
    second = await browser.fetch(link(first, "older"))
    assert [r[4] for r in rows(first) + rows(second)] == failed and link(second, "older") is None
    assert all(r[5] == "发送失败" for r in rows(first) + rows(second))
    assert "status=failed" in link(second, "newer") and "status=failed" in link(second, "latest")
    # Past the oldest entry: an empty page that leads back to the newest.
    beyond = await browser.fetch(f"/admin/notifications?status=failed&before={now - 200 * DAY!r}&id=x")
    assert rows(beyond) == [] and "没有发送失败的通知" in beyond.text
    assert link(beyond, "latest") == "/admin/notifications?status=failed"
    # Positions far outside every entry's time are walked from the nearest end, not across the void.
    far = await browser.fetch("/admin/notifications?before=1e300&id=x")
    assert [r[4] for r in rows(far)] == newest[:20]
    far = await browser.fetch("/admin/notifications?after=-1e300&id=x")
    assert [r[4] for r in rows(far)] == newest[-20:] and link(far, "newer")


@pytest.mark.gen_test
async def test_the_gate_log_shows_real_scans_and_filters_them(admin_login, approved_visit,  # noqa: F811
                                                             anonymous, ctx, clock):
    rid = await approved_visit()
    data = (await signin(anonymous, "13900000001")).json()["data"]
    assert (await check(anonymous, data["qrcode"], gate="east-1"))["code"] == 0
    assert (await check(anonymous, data["retinues"][0]["qrcode"], gate="west-2"))["code"] == 0
    assert (await check(anonymous, "no-such-token-0123456789", gate="east-1"))["code"] == -201
    await ctx.pass_log.flush()
    clock.advance(-DAY)  # a scan yesterday, before the visit began
    assert (await check(anonymous, data["qrcode"], gate="east-1"))["code"] == -202
    await ctx.pass_log.flush()
    clock.advance(DAY)
    browser = await admin_login()

    async def shown(query=""):
        page = await browser.fetch("/admin/passes" + query)
        assert page.status == 200, page
        return [r[1:] for r in rows(page)]

    everything = await shown()
    assert everything == [["east-1", "二维码无效", "—", "—", "gate (API_KEYS)"],
                          ["west-2", "放行", f"#{rid}", "随行人员 1", "gate (API_KEYS)"],
                          ["east-1", "放行", f"#{rid}", "访客本人", "gate (API_KEYS)"]]
    page = await browser.fetch("/admin/passes")
    assert 'class="badge text-bg-danger"' in page.text and f'href="/admin/records/{rid}"' in page.text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows(page)[0][0])  # seconds shown
    assert await shown("?result=allowed") == everything[1:]
    assert await shown("?result=refused") == everything[:1]
    assert await shown("?gate=east-1") == [everything[0], everything[2]]
    assert await shown("?gate=east") == []  # the gate's exact name
    assert await shown(f"?record={rid}&result=allowed&gate=west-2") == everything[1:2]
    today, yesterday = day_of(ctx, clock()), day_of(ctx, clock() - DAY)
    assert await shown(f"?date={today}") == everything
    assert await shown(f"?date={yesterday}") == [
        ["east-1", "未到访问时间", f"#{rid}", "访客本人", "gate (API_KEYS)"]]
    assert await shown(f"?date={yesterday}&result=allowed") == []


@pytest.mark.parametrize("query, message", [
    ("?date=2026-13-45", "通行日期应为日期"), ("?date=yesterday", "通行日期应为日期"),
    ("?date=9999-12-31", "日期超出范围"), ("?record=abc", "访客记录编号应为正整数"),
    ("?record=99999999999999999999", "访客记录编号应为正整数"), ("?result=maybe", "通行结果应为"),
    ("?before=nan", "翻页位置无效"), ("?before=1&skip=-1", "翻页位置无效"),
])
@pytest.mark.gen_test
async def test_malformed_gate_log_filters_are_400_with_the_form_kept(admin_login, query, message):
    browser = await admin_login()
    page = await browser.fetch("/admin/passes" + query)
    assert page.status == 400 and message in page.text
    assert 'id="filters"' in page.text and 'id="passes"' not in page.text


async def write_buckets(ctx, buckets: list[list[dict]]) -> None:
    """Store buckets as PassLog writes them (their first entry's time, their last's as `until`)."""
    await ctx.storage.db.passes.insert_many([PassLog.bucket(b) for b in buckets])


def decision(time: float, name: str, code: int = 0) -> dict:
    return {"time": time, "code": code, "gate": name, "key_id": "k", "key_name": "闸机", "record_id": 1,
            "person": 0, "token_prefix": "abcdef"}


async def page_through(browser, query: str) -> list[list[str]]:
    """Every row of the gate log, following "更早的记录" to the end."""
    seen, url = [], "/admin/passes" + query
    while url:
        page = await browser.fetch(url)
        assert page.status == 200, page
        assert len(rows(page)) <= 100
        seen += rows(page)
        url = earlier_link(page)
    return seen


@pytest.mark.gen_test
async def test_earlier_records_page_through_many_scans_without_repeats_or_gaps(
        admin_login, approved_visit, anonymous, ctx):  # noqa: F811
    await approved_visit()
    qrcode = (await signin(anonymous, "13900000001")).json()["data"]["qrcode"]
    for n in range(130):
        assert (await check(anonymous, qrcode, gate=f"gate-{n:03d}"))["code"] == 0
    await ctx.pass_log.flush()
    browser = await admin_login()
    first = await browser.fetch("/admin/passes")
    assert len(rows(first)) == 100 and earlier_link(first)
    seen = await page_through(browser, "")
    assert [r[1] for r in seen] == [f"gate-{n:03d}" for n in range(129, -1, -1)]


@pytest.mark.gen_test
async def test_the_cursor_keeps_equal_times_and_overlapping_buckets_in_order(admin_login, ctx):
    # Three processes' buckets overlapping in time, many decisions at the very same time (a whole page
    # of them), every fifth one refused; and a bucket from before midnight reaching into today.
    base = today_start(ctx) + 3600
    buckets = [[decision(base + (n // 9) * 0.5, f"p{p}-{n:03d}", -201 if n % 5 == 0 else 0)
                for n in range(chunk, chunk + 30)] for p in range(3) for chunk in range(0, 150, 30)]
    buckets.append([decision(base + 100, f"same-{n:03d}") for n in range(150)])
    buckets.append([decision(base - 3600 - 30 + n * 10, f"midnight-{n}") for n in range(6)])
    await write_buckets(ctx, buckets)
    entries = [e for b in buckets for e in b if e["time"] >= base - 3600]
    browser = await admin_login()
    seen = await page_through(browser, "")
    assert sorted(r[1] for r in seen) == sorted(e["gate"] for e in entries)  # each once
    times = {e["gate"]: e["time"] for e in entries}
    assert [times[r[1]] for r in seen] == sorted(times.values(), reverse=True)
    assert [r[1] for r in seen[-3:]] == ["midnight-5", "midnight-4", "midnight-3"]  # not the ones before 0:00
    refused = await page_through(browser, "?result=refused")
    assert sorted(r[1] for r in refused) == sorted(e["gate"] for e in entries if e["code"])
    yesterday = await page_through(browser, f"?date={day_of(ctx, base - DAY)}")
    assert [r[1] for r in yesterday] == ["midnight-2", "midnight-1", "midnight-0"]


@pytest.mark.gen_test
async def test_the_search_and_the_record_page_query_agree(ctx):
    base = today_start(ctx) + 3600
    await write_buckets(ctx, [[decision(base + n, f"g{n}") | {"record_id": n % 3} for n in range(10)]])
    found = await ctx.pass_log.search(start=base, end=base + DAY, record_id=1)
    assert [e["gate"] for e in found] == ["g7", "g4", "g1"]
    assert found == await ctx.pass_log.entries(record_id=1)
    after_g5 = await ctx.pass_log.search(start=base, end=base + DAY, before=base + 5, skip=1, limit=2)
    assert [e["gate"] for e in after_g5] == ["g4", "g3"]
