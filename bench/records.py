"""The admin records list (GET /v1/visit/records?type=web&...) at 1,000 and at 100,000 records.

Starts SecantusDB, redis-server and `python server.py` (the real server) in a temporary folder,
seeds visit records straight into MongoDB with insert_many (the indexes exist before: the server's
build_context creates them at start-up), and times sequential requests of one admin:

- selective: one employee's visits (interviewee_phone) overlapping one week (start_time/end_time),
  page 1, size 20 - what an admin looks up; the goal applies to it: p50 at 100k <= 3 x p50 at 1k;
- name only: a visitor-name substring and nothing else, at 100k - information only (every record
  is read and filtered; expected slow on SecantusDB).

The data: ~200 employees as interviewees (uniform), 30,000 visitors, visits during office hours
spread over the last two years and the next two weeks, ~30% with 1-3 retinues, most past visits
authorized and signed in. Prints explain() of the queries the server sends.

    .venv/bin/python bench/records.py                   # ~2 minutes
    .venv/bin/python bench/records.py --requests 500

Writes bench/results/records.json.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ADMIN_KEY, CpuWatch, PySpy, Stack, run_main, write_results  # noqa: E402

from wxapp.context import build_context  # noqa: E402
from wxapp import lifecycle  # noqa: E402
from wxapp.visits import SORT, search_grams  # noqa: E402

GOAL_FACTOR = 3.0
RETENTION_DAYS = 3650
TZ = ZoneInfo("Asia/Shanghai")
DAY = 86400
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬芳燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹霞香月莺媛"
COMPANIES = ["星辰科技", "远航物流", "蓝海咨询", "华新建设", "启明教育", "恒信律师事务所", "个人", ""]
DEPARTMENTS = ["研发部", "市场部", "行政部", "财务部", "人事部", "销售部", "法务部"]


# --- data --------------------------------------------------------------------------------------

class Population:
    """Employees and visitors, and visit records drawn from them (deterministic for a seed)."""

    def __init__(self, seed: int, now: int, employees: int = 200, visitors: int = 30_000):
        self.rng = random.Random(seed)
        self.now = now
        self.employees = [(self.name(), f"138{i:08d}", self.rng.choice(DEPARTMENTS)) for i in range(employees)]
        self.visitors = [(self.name(), f"139{i:08d}", self.rng.choice(COMPANIES)) for i in range(visitors)]
        today = datetime.datetime.fromtimestamp(now, TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        self.first_day = today - datetime.timedelta(days=730)
        self.days = 730 + 14
        self.longest = 0  # the longest visit seeded so far, in seconds
        self.first_start, self.last_start = 2 ** 62, 0  # the earliest and latest start seeded so far

    def name(self) -> str:
        return self.rng.choice(SURNAMES) + "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2))))

    def record(self, record_id: int) -> dict:
        """One record as Visits.apply (and, for past visits, sign-in) leave it."""
        rng = self.rng
        interviewee, interviewee_phone, department = rng.choice(self.employees)
        name, phone, come_from = rng.choice(self.visitors)
        day = self.first_day + datetime.timedelta(days=rng.randrange(self.days))
        start = int((day + datetime.timedelta(hours=rng.randint(8, 17), minutes=rng.choice((0, 15, 30, 45)))).timestamp())
        end = start + rng.choice((1, 2, 2, 3, 4)) * 3600
        retinues = []
        if rng.random() < 0.30:
            for _ in range(rng.randint(1, 3)):
                r_name, r_phone, _ = rng.choice(self.visitors)
                retinues.append({"name": r_name, "phone": r_phone, "photo": "", "koala_id": 0, "token": ""})
        invited = rng.random() < 0.4  # an employee's invitation (authorized at once) or a visitor's application
        proposer = interviewee_phone if invited else phone
        is_auth = 1 if invited or rng.random() < (0.9 if start < self.now else 0.6) else 0
        signed = is_auth and start < self.now and rng.random() < 0.85
        record = {
            "_id": record_id, "subject_type": 1, "name": name, "phone": phone, "purpose": rng.randrange(5),
            "remark": "", "come_from": come_from, "proposer": proposer, "interviewee": interviewee,
            "interviewee_phone": interviewee_phone, "department": department, "start_time": start,
            "end_time": end, "photo": "", "koala_id": 0, "token": "", "retinues": retinues, "tokens": [],
            "is_auth": is_auth, "signin_time": 0,
            "phones": list(dict.fromkeys([phone, *(r["phone"] for r in retinues)])),
            "parties": list(dict.fromkeys([proposer, phone])),
            "created_by": f"o-{proposer}", "create_time": start - rng.randint(3600, 7 * DAY), "pending_events": [],
        }
        if signed:
            record["signin_time"] = start + rng.randint(0, 1800)
            for i, person in enumerate([record, *retinues]):
                person["koala_id"] = record_id * 10 + i
                person["token"] = f"t{record_id:09d}x{i}" + "A" * 20
            record["tokens"] = [p["token"] for p in [record, *retinues]]
        record["status"] = lifecycle.status_of(record)  # as apply and sign-in store it
        if record["status"] in lifecycle.AT_END and end <= self.now:
            # Over: as the end-of-window job left it (the server would otherwise move them all meanwhile).
            move = lifecycle.AT_END[record["status"]]
            record["status"] = move.target
            if move is lifecycle.CHECK_OUT:
                record["checkout_time"] = end
            if move.gate_code is not None:
                record["revoked"] = {"reason": move.name, "code": move.gate_code, "at": float(end)}
        record["grams"] = search_grams(record)  # name search's index keys, as apply stores them
        return record


async def seed(stack: Stack, population: Population, first_id: int, count: int, batch: int = 2000) -> float:
    """Insert `count` records with ids from `first_id`; returns the seconds it took."""
    context = await build_context(stack.config())  # creates the indexes first (a no-op when they exist)
    ctx = context.services
    try:
        # Visits go back two years: keep them as seeded (with the default 180 days the retention job
        # would anonymise three quarters of them while the benchmark runs).
        await ctx.system_settings.save_retention({"retention_days": RETENTION_DAYS})
        started = time.perf_counter()
        for offset in range(0, count, batch):
            docs = [population.record(first_id + offset + i) for i in range(min(batch, count - offset))]
            await ctx.storage.db.records.insert_many(docs, ordered=False)
            population.longest = max([population.longest, *(d["end_time"] - d["start_time"] for d in docs)])
            population.first_start = min([population.first_start, *(d["start_time"] for d in docs)])
            population.last_start = max([population.last_start, *(d["start_time"] for d in docs)])
        # What Visits.apply keeps besides the record itself: the id sequence and the longest visit.
        await ctx.storage.db.counters.update_one({"_id": "records"}, {"$max": {"seq": first_id + count - 1}}, upsert=True)
        await ctx.storage.db.counters.update_one(
            {"_id": "longest_visit"},
            {"$max": {"seconds": population.longest, "last_start": population.last_start},
             "$min": {"first_start": population.first_start}, "$inc": {"records": count},
             "$set": {"span_known": True}}, upsert=True)
        return time.perf_counter() - started
    finally:
        await context.close()


async def explain(stack: Stack, params: dict) -> dict:
    """What the server's query for these filters asks MongoDB, and how the planner answers it."""
    context = await build_context(stack.config())
    ctx = context.services
    try:
        args = {k: (int(v) if k in ("start_time", "end_time") else v) for k, v in params.items()}
        query = ctx.visits.filters(args)
        # The filter Visits.find sends (index_query adds derived bounds, where the code has it).
        index_query = getattr(ctx.visits, "index_query", None)
        sent = await index_query(query) if index_query else query.index
        plan = await ctx.storage.db.records.find(sent).sort(SORT).explain()
        yielded = await ctx.storage.db.records.count_documents(sent)
        return {"filter": sent, "checks_in_python": len(query.checks),
                "records_the_index_yields": yielded, "winning_plan": plan.get("queryPlanner", {}).get("winningPlan", plan)}
    finally:
        await context.close()


# --- timing ------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def timed_requests(session: requests.Session, url: str, params: dict, n: int, warmup: int,
                   watch: CpuWatch | None = None) -> dict:
    """`warmup` then `n` sequential requests; latencies in ms, what the page said, and (with `watch`)
    the CPU time per measured request of each process."""
    latencies, answer = [], None
    for i in range(warmup + n):
        if i == warmup and watch is not None:
            watch.start()
        started = time.perf_counter()
        resp = session.get(url, params=params, timeout=120)
        elapsed = (time.perf_counter() - started) * 1000
        answer = resp.json()
        if resp.status_code != 200 or answer.get("code") != 0:
            raise RuntimeError(f"GET {resp.url} answered {resp.status_code}: {resp.text[:300]}")
        if i >= warmup:
            latencies.append(elapsed)
    cpu = watch.stop() if watch is not None else None
    return {"n": n, "p50_ms": statistics.median(latencies), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "mean_ms": statistics.fmean(latencies),
            "min_ms": min(latencies), "max_ms": max(latencies),
            "matches": answer["page"]["count"], "returned": len(answer["data"]),
            **({"cpu_ms_per_request": {name: round(sec / n * 1000, 2) for name, sec in cpu["cpu_seconds"].items()
                                       if name in ("server.py", "secantus")},
                "others_cores": cpu["others_cores"]} if cpu else {})}


def show(label: str, r: dict) -> None:
    print(f"  {label:34s} p50 {r['p50_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms  "
          f"({r['n']} requests; {r['matches']} matches, {r['returned']} on the page)", flush=True)
    if "cpu_ms_per_request" in r:
        print(f"  {'':34s} CPU per request (ms): {r['cpu_ms_per_request']}; "
              f"cores used by other processes {r['others_cores']}", flush=True)


def show_plan(label: str, info: dict) -> None:
    print(f"  explain {label}: filter sent {json.dumps(info['filter'], ensure_ascii=False)}, "
          f"{info['checks_in_python']} more checks in Python; the index yields {info['records_the_index_yields']} records")
    print(f"    winning plan: {json.dumps(info['winning_plan'], ensure_ascii=False, default=str)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Admin records list latency at 1k and 100k records.")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per query and size")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--name-requests", type=int, default=5, help="requests of the name-only query at the large size")
    parser.add_argument("--employee", type=int, default=7, help="which of the 200 employees the admin looks up")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--py-spy", action="store_true",
                        help="at the large size, profile server.py and SecantusDB during extra selective requests "
                             "(bench/results/records-*.svg; needs py-spy)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args()

    now = int(time.time())
    population = Population(args.seed, now)
    today = datetime.datetime.fromtimestamp(now, TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    week = (int((today - datetime.timedelta(days=7)).timestamp()), int(today.timestamp()))  # last full week
    employee_name, employee_phone, _ = population.employees[args.employee]
    selective = {"type": "web", "interviewee_phone": employee_phone, "start_time": str(week[0]),
                 "end_time": str(week[1]), "page": "1", "size": "20"}
    name_only = {"type": "web", "name": population.visitors[0][0][1:] or population.visitors[0][0],
                 "page": "1", "size": "20"}
    print(f"selective query: {employee_name} {employee_phone}, visits overlapping "
          f"{datetime.datetime.fromtimestamp(week[0], TZ):%Y-%m-%d} .. {datetime.datetime.fromtimestamp(week[1], TZ):%Y-%m-%d}, "
          f"page 1, size 20; name-only query: name={name_only['name']}", flush=True)

    results: dict = {"queries": {"selective": selective, "name_only": name_only}, "sizes": {}}
    with Stack(keep=args.keep) as stack:
        app = stack.start_app()
        watch = CpuWatch(stack)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        url = app.url + "/v1/visit/records"
        seeded = 0
        for size in (args.small, args.large):
            print(f"\n== {size:,} records", flush=True)
            took = asyncio.run(seed(stack, population, seeded + 1, size - seeded))
            print(f"  seeded {size - seeded:,} records in {took:.1f} s ({(size - seeded) / took:,.0f}/s)", flush=True)
            seeded = size
            entry: dict = {"seed_seconds": took}
            watch.wait_for_quiet()
            entry["selective"] = timed_requests(session, url, selective, args.requests, args.warmup, watch)
            show("selective (phone + week + page)", entry["selective"])
            entry["explain_selective"] = asyncio.run(explain(stack, selective))
            show_plan("selective", entry["explain_selective"])
            if size == args.large:
                entry["name_only"] = timed_requests(session, url, name_only, args.name_requests, 1, watch)
                show("name only (information)", entry["name_only"])
                entry["explain_name_only"] = asyncio.run(explain(stack, name_only))
                show_plan("name only", entry["explain_name_only"])
            if size == args.large and args.py_spy:  # extra requests under the profiler, left out of the figures
                with PySpy(app.proc.pid, "records-server", True), PySpy(stack.mongo.proc.pid, "records-secantus", True):
                    timed_requests(session, url, selective, args.requests, 0)
            results["sizes"][str(size)] = entry
        session.close()

    small, large = results["sizes"][str(args.small)], results["sizes"][str(args.large)]
    factor = large["selective"]["p50_ms"] / small["selective"]["p50_ms"]
    met = factor <= GOAL_FACTOR
    print()
    print(f"selective p50 at {args.small:>7,} : {small['selective']['p50_ms']:8.2f} ms   (p90 {small['selective']['p90_ms']:.2f} ms)")
    print(f"selective p50 at {args.large:>7,} : {large['selective']['p50_ms']:8.2f} ms   (p90 {large['selective']['p90_ms']:.2f} ms)")
    print(f"ratio {args.large:,} / {args.small:,}     : {factor:8.2f}      goal <= {GOAL_FACTOR:.0f}  {'PASS' if met else 'FAIL'}")
    print(f"name-only p50 at {args.large:>7,} : {large['name_only']['p50_ms']:8.2f} ms   (information; no goal)")
    print(f"records the index hands the server for the selective query: "
          f"{small['explain_selective']['records_the_index_yields']} at {args.small:,}, "
          f"{large['explain_selective']['records_the_index_yields']} at {args.large:,} "
          f"(the page shows {large['selective']['returned']} of {large['selective']['matches']} matches)")
    results["ratio"] = factor
    results["goal"] = {"factor_max": GOAL_FACTOR, "met": met}
    path = write_results("records", results)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
