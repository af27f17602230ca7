"""Gate verification (POST /v1/visit/qrcode) under load, against a bare Tornado JSON POST endpoint.

Starts SecantusDB, redis-server and `python server.py` (the real server, configured through its
environment) in a temporary folder, seeds one signed-in visit whose QR code is valid now, checks
that the gate answers code 0 for it, then runs wrk against the bare endpoint (bench/bare_server.py)
and against the gate - one at a time, after a short warm-up each, in alternating rounds (the median
round of each counts). With --compare-ref it also starts the server of another git ref (extracted
with `git archive` into the temporary folder, on its own database) as a further side of the same
rounds. For information it also measures the bare endpoint plus one Redis GET.
Everything stops at the end.

    .venv/bin/python bench/gate.py                          # ~3 minutes
    .venv/bin/python bench/gate.py --compare-ref c8e74ab     # ~4 minutes: + the server as of c8e74ab
    .venv/bin/python bench/gate.py --rounds 1               # ~1 minute

Goals: gate req/s >= 0.80 x bare req/s, gate p99 <= 20 ms (2 cores, wrk -t2 -c32 on loopback).
Writes bench/results/gate.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GATE_KEY, Child, CpuWatch, PySpy, Stack, run_main, write_results  # noqa: E402

from wxapp.context import build_context  # noqa: E402
from wxapp.security import new_token  # noqa: E402

GOAL_RATIO = 0.80
GOAL_P99_MS = 20.0

# wrk prints this line from done(); latencies are in microseconds.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d," ..
    "\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


async def seed_visit(stack: Stack, mongo_db: str = "visitor") -> tuple[int, str]:
    """A visit shaped as Visits.apply + _sign_in_locked leave it: authorized, signed in, valid for
    the next hours; its tokens published to Redis as sign-in does. Returns (id, QR content)."""
    context = await build_context(stack.config(mongo_db=mongo_db))
    ctx = context.services
    try:
        now = int(time.time())
        token = new_token(24)
        record = {
            "_id": await ctx.storage.next_id("records"),
            "subject_type": 1, "name": "张三", "phone": "13900000001", "purpose": 2, "remark": "",
            "come_from": "星辰科技", "proposer": "13900000001", "interviewee": "李经理",
            "interviewee_phone": "13800000002", "department": "市场部",
            "start_time": now - 3600, "end_time": now + 8 * 3600, "photo": "", "koala_id": 101,
            "token": token, "retinues": [], "tokens": [token], "is_auth": 1, "signin_time": now - 60,
            "phones": ["13900000001"], "parties": ["13900000001"], "created_by": "o-bench",
            "create_time": now - 7200, "pending_events": [],
        }
        await ctx.storage.db.records.insert_one(record)
        await ctx.gate_cache.publish(record)
        # The same QR content the records API hands out (Visits.present).
        return record["_id"], json.dumps({"id": record["_id"], "qrcode": token})
    finally:
        await context.close()


async def count_passes(stack: Stack) -> dict:
    """Gate decisions logged by the server in the passes collection, by code (the pass log flushes
    within a second). Reads one document per decision, or buckets of decisions under `entries`."""
    context = await build_context(stack.config())  # the database of the server under test
    ctx = context.services
    try:
        counts: dict = {}
        async for doc in ctx.storage.db.passes.find({}, {"code": 1, "entries.code": 1}):
            for entry in doc.get("entries", [doc]):
                counts[entry.get("code")] = counts.get(entry.get("code"), 0) + 1
        return counts
    finally:
        await context.close()


def post(url: str, body: bytes, key: str) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


SENT: dict[str, int] = {}  # requests wrk completed, per URL (warm-ups included)


def wrk(url: str, script: Path, seconds: int, threads: int, connections: int) -> dict:
    """Run wrk once; its figures from the script's done() line, plus wrk's own text."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = done.stdout
    line = next((line for line in out.splitlines() if line.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures for {url}:\n{out}\n{done.stderr}")
    data = json.loads(line[len("BENCH_JSON "):])
    SENT[url] = SENT.get(url, 0) + data["requests"]
    non2xx = 0
    for text in out.splitlines():
        if "Non-2xx or 3xx responses:" in text:
            non2xx = int(text.split(":")[1])
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "requests": data["requests"],
        "p50_ms": data["p50_us"] / 1000, "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000, "max_ms": data["max_us"] / 1000,
        "socket_errors": sum(data[k] for k in ("connect", "read", "write", "timeout")),
        "non_2xx": non2xx, "wrk_output": out,
    }


def measure(name: str, url: str, script: Path, args, watch: CpuWatch) -> dict:
    """One measured wrk run, with the CPU the rest of the machine used meanwhile."""
    print(f"[{name}] wrk -t{args.threads} -c{args.connections} -d{args.duration}s ...", flush=True)
    watch.start()
    run = wrk(url, script, args.duration, args.threads, args.connections)
    run["cpu"] = watch.stop()
    if args.verbose:
        print(run["wrk_output"], flush=True)
    run["cpu_us_per_request"] = {proc: round(sec / run["requests"] * 1e6) for proc, sec in run["cpu"]["cpu_seconds"].items()
                                 if sec and proc != "bench+wrk"}
    print(f"[{name}]   {run['rps']:.0f} req/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
          f"errors {run['socket_errors']}, non-2xx {run['non_2xx']}", flush=True)
    print(f"[{name}]   CPU per request (us): {run['cpu_us_per_request']}; cores used by other processes "
          f"{run['cpu']['others_cores']}, idle {run['cpu']['idle_cores']}", flush=True)
    return run


def median_run(runs: list[dict]) -> dict:
    """With several rounds, the round of median throughput."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def checkout(ref: str, into: Path) -> Path:
    """The tree of a git ref of this repository, extracted into `into` (no worktree is created)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=Path(__file__).resolve().parent.parent,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description="Gate verification vs a bare Tornado JSON POST endpoint.")
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per side, alternating (median reported)")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="seconds to wait for other processes to calm down before each run")
    parser.add_argument("--compare-ref", metavar="REF", action="append", default=[],
                        help="also measure the server of this git ref (e.g. c8e74ab) in the same rounds; repeatable")
    parser.add_argument("--handler-only", action="store_true",
                        help="also measure this code with every scan taken by GateHandler "
                             "(bench/handler_only_server.py) in the same rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-redis-reference", action="store_true",
                        help="skip the information run of the bare endpoint plus one Redis GET")
    parser.add_argument("--py-spy", action="store_true",
                        help="after the measured rounds, profile server.py during one more gate run "
                             "(bench/results/gate-server.svg; needs py-spy)")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own report of each measured run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args()

    with Stack(keep=args.keep) as stack:
        app = stack.start_app()
        record_id, qr = asyncio.run(seed_visit(stack))
        body = json.dumps({"qrcode": qr, "gate": "east-1"}, ensure_ascii=False)
        gate_url = app.url + "/v1/visit/qrcode"

        # Benchmark the success path only: the gate must open for this code now.
        answer = post(gate_url, body.encode(), GATE_KEY)
        if answer.get("code") != 0:
            print(f"the gate does not open for the seeded QR code: {answer}", file=sys.stderr)
            return 1
        print(f"seeded record {record_id}; gate answers {answer} (server pid {app.proc.pid})", flush=True)

        script = stack.tmp / "post.lua"
        script.write_text(LUA_TEMPLATE.format(body=body, key=GATE_KEY))
        scripts: dict[str, Path] = {}  # per side, where it is not `script`

        # The sides, measured one at a time; with several rounds they alternate, so a slow spell
        # of the machine hits each. "bare+redis" is information: the bare endpoint plus one Redis GET.
        urls = {"bare": stack.start_bare().url, "gate": app.url}
        def add_side(side: str, server: Child, db: str) -> bool:
            """Another server measured in the same rounds, on its own database with its own seeded visit."""
            _, other_qr = asyncio.run(seed_visit(stack, db))
            other_body = json.dumps({"qrcode": other_qr, "gate": "east-1"}, ensure_ascii=False)
            if post(server.url + "/v1/visit/qrcode", other_body.encode(), GATE_KEY).get("code") != 0:
                print(f"{side}: the gate does not open for its seeded QR code", file=sys.stderr)
                return False
            scripts[side] = stack.tmp / f"post-{db}.lua"
            scripts[side].write_text(LUA_TEMPLATE.format(body=other_body, key=GATE_KEY))
            urls[side] = server.url
            return True

        if args.handler_only and not add_side("gate (handler only)", stack.start_app(
                name="handler_only_server.py", mongo_db="handler_only", script="bench/handler_only_server.py"),
                "handler_only"):
            return 1
        for n, ref in enumerate(args.compare_ref):
            db = f"compare{n}"
            if not add_side(f"gate@{ref}", stack.start_app(checkout(ref, stack.tmp / db), f"server.py@{ref}",
                                                           mongo_db=db), db):
                return 1
        if not args.no_redis_reference:
            urls["bare+redis"] = stack.start_bare(redis=True).url
        urls = {name: url + "/v1/visit/qrcode" for name, url in urls.items()}
        watch = CpuWatch(stack)
        for name, url in urls.items():
            print(f"[{name}] warm-up {args.warmup}s ...", flush=True)
            wrk(url, scripts.get(name, script), args.warmup, args.threads, args.connections)
        runs: dict[str, list[dict]] = {name: [] for name in urls}
        for _ in range(args.rounds):
            for name, url in urls.items():
                watch.wait_for_quiet(0.25, args.quiet_wait)
                runs[name].append(measure(name, url, scripts.get(name, script), args, watch))
        if args.py_spy:  # an extra gate run under the profiler, left out of the figures
            with PySpy(app.proc.pid, "gate-server", True):
                measure("gate, under py-spy", urls["gate"], script, args, watch)
        results = {name: median_run(side) for name, side in runs.items()}

        time.sleep(2.0)  # let the pass log flush
        passes = asyncio.run(count_passes(stack))

    bare, gate = results["bare"], results["gate"]
    ratio = gate["rps"] / bare["rps"]
    ok_ratio = ratio >= GOAL_RATIO
    ok_p99 = gate["p99_ms"] <= GOAL_P99_MS
    failed = {code: n for code, n in passes.items() if code != 0}
    print()
    print(f"bare  requests/s : {bare['rps']:8.0f}")
    print(f"gate  requests/s : {gate['rps']:8.0f}")
    print(f"ratio gate/bare  : {ratio:8.2f}   goal >= {GOAL_RATIO:.2f}  {'PASS' if ok_ratio else 'FAIL'}")
    print(f"bare  p50 / p99  : {bare['p50_ms']:6.2f} ms / {bare['p99_ms']:6.2f} ms")
    print(f"gate  p50 / p99  : {gate['p50_ms']:6.2f} ms / {gate['p99_ms']:6.2f} ms"
          f"   goal p99 <= {GOAL_P99_MS:.0f} ms  {'PASS' if ok_p99 else 'FAIL'}")
    for name, other in results.items():
        if name.startswith("gate@"):
            print(f"{name:<17}: {other['rps']:8.0f} req/s = {other['rps'] / bare['rps']:.2f} x bare, "
                  f"p50 {other['p50_ms']:.2f} ms / p99 {other['p99_ms']:.2f} ms")
    print("rounds (req/s, p99, cores used by other processes):")
    for n in range(args.rounds):
        print(f"  {n + 1}: " + "; ".join(f"{name} {side[n]['rps']:.0f}, {side[n]['p99_ms']:.1f} ms, "
                                         f"{side[n]['cpu']['others_cores']:.2f}" for name, side in runs.items()))
    if "bare+redis" in results:
        ref = results["bare+redis"]
        print(f"(information) bare + 1 Redis GET: {ref['rps']:.0f} req/s = {ref['rps'] / bare['rps']:.2f} x bare, "
              f"p50 {ref['p50_ms']:.2f} ms / p99 {ref['p99_ms']:.2f} ms")
    print("(information) CPU per request, us: " + "; ".join(
        f"{name}: {r['cpu_us_per_request']}" for name, r in results.items()))
    print("(information) cores used by other processes during the runs: " + ", ".join(
        f"{name} {r['cpu']['others_cores']:.2f}" for name, r in results.items()) + f" (of {os.cpu_count()})")
    logged, completed = sum(passes.values()), SENT.get(urls["gate"], 0) + 1
    # The server answers a few requests wrk stops waiting for at the end of each run, never fewer.
    lost = max(0, completed - logged)
    print(f"gate decisions logged: {logged} (wrk completed {completed - 1} gate requests, "
          f"+1 check), not code 0: {sum(failed.values())} {failed or ''}"
          + (f"; LOST from the gate log: {lost}" if lost else ""))

    def clean(run: dict) -> dict:
        return {k: v for k, v in run.items() if k != "wrk_output"}

    path = write_results("gate", {
        "load": {"tool": "wrk", "threads": args.threads, "connections": args.connections,
                 "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds},
        **{name.replace("+", "_"): clean(r) for name, r in results.items()},
        "compare_refs": args.compare_ref,
        "ratio": ratio,
        "goals": {"ratio_min": GOAL_RATIO, "gate_p99_ms_max": GOAL_P99_MS,
                  "ratio_met": ok_ratio, "p99_met": ok_p99},
        "rounds": {name.replace("+", "_"): [clean(r) for r in side] for name, side in runs.items()},
        "gate_decisions_by_code": {str(k): v for k, v in passes.items()},
        "gate_requests_completed": completed, "gate_decisions_lost": lost,
    })
    print(f"written to {path}")
    return 0 if not failed and not lost and gate["non_2xx"] == 0 else 1


if __name__ == "__main__":
    run_main(main)
