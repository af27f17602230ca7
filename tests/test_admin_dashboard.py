"""/admin/: today at a glance and the last 7 days, counted per calendar day in TIMEZONE."""
import datetime
import json
import re

import pytest

from tests.conftest import GATE_KEY, KIOSK_KEY
from tests.test_admin_records_pages import invite

DAY = 86400


def figure(html: str, card: str) -> int:
    return int(re.search(rf'id="{card}".*?class="value">(\d+)<', html, re.S).group(1))


def day_row(html: str, date: str) -> list[int]:
    row = re.search(rf"<tr><td>{date}</td>(.*?)</tr>", html).group(1)
    return [int(n) for n in re.findall(r"<td>(\d+)</td>", row)]


@pytest.fixture
def noon(ctx, clock):
    """Move the clock to 12:00 today in TIMEZONE, so visits an hour away stay on the same day."""
    now = datetime.datetime.fromtimestamp(clock(), ctx.config.tz)
    clock.advance(now.replace(hour=12, minute=0, second=0).timestamp() - clock())
    return clock


async def scan(anonymous, record, person, gate="东门"):
    token = ([record] + record["retinues"])[person]["token"]
    body = {"qrcode": json.dumps({"id": record["_id"], "qrcode": token}), "gate": gate}
    return (await anonymous.fetch("/v1/visit/qrcode", "POST", json=body, key=GATE_KEY)).json()["code"]


@pytest.mark.gen_test(timeout=60)
async def test_today_counts_expected_signed_in_passed_and_on_site(admin_login, journey, ctx, noon, anonymous):
    clock = noon
    # Three days ago: one visit, signed in.
    clock.advance(-3 * DAY)
    earlier = await invite(ctx, "前天访客", "13900000009", clock() + 600, interviewee="赵总",
                           interviewee_phone="13800000009")
    clock.advance(900)
    signed = await anonymous.fetch("/v1/visit/signin", "POST", json={"phone": "13900000009"}, key=KIOSK_KEY)
    assert signed.json()["code"] == 0
    clock.advance(3 * DAY - 900)
    # Today: one signed-in visit of three people, one authorized visit later, one awaiting approval.
    rid = await journey()
    await invite(ctx, "下午访客", "13900000005", clock() + 3 * 3600)
    waiting = await invite(ctx, "待批访客", "13900000006", clock() + 3600)
    await ctx.storage.db.records.update_one({"_id": waiting}, {"$set": {"is_auth": 0}})
    record = await ctx.visits.get(rid)
    assert [await scan(anonymous, record, n) for n in (0, 1, 1)] == [0, 0, 0]  # the same person twice
    old = await ctx.visits.get(earlier)
    assert await scan(anonymous, old, 0) == -209  # its window is over: refused, not counted
    await ctx.pass_log.flush()

    admin = await admin_login()
    html = (await admin.fetch("/admin/")).text
    assert figure(html, "stat-expected") == 3
    assert "其中待审批 1" in html
    assert figure(html, "stat-signed-in") == 1 and "共 3 人" in html
    assert figure(html, "stat-passed") == 2
    assert figure(html, "stat-on-site") == 2
    today, three_days_ago = (datetime.datetime.fromtimestamp(clock() - n * DAY, ctx.config.tz).date().isoformat()
                             for n in (0, 3))
    assert day_row(html, today) == [3, 1, 1, 3, 2]
    assert day_row(html, three_days_ago) == [1, 0, 1, 1, 0]
    assert html.count("<rect") == 7 * 3  # three bars a day in the chart

    clock.advance(2 * 3600)  # the signed-in visit has ended
    html = (await admin.fetch("/admin/")).text
    assert figure(html, "stat-on-site") == 0 and figure(html, "stat-passed") == 2
