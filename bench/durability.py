"""What durable writes cost: invitations, sign-ins and the gate, before and after, side by side.

Two servers run at once, each on its own SecantusDB (and its own Redis database):
- *before*: SecantusDB without `--sync-on-commit`, writes acknowledged with `w=1` (no `j`): what a
  `kill -9` could lose;
- *after*: SecantusDB with `--sync-on-commit` and writes with `j: true` (the defaults now).
A local fake Koala (tests/fakes) answers the sign-ins. In alternating rounds, each side gets a run
of sequential invitations (`POST /v1/subject` by an employee: an id, the record, its outbox) and a
run of first sign-ins (`POST /v1/visit/signin`: Koala subjects, QR tokens, the record updated), then
a short load on the gate (`POST /v1/visit/qrcode`, which reads no MongoDB on a cache hit) from 8
client threads in this process (not wrk: this compares two sides, it does not chase the gate's ceiling).

    .venv/bin/python bench/durability.py                 # ~2 minutes
    .venv/bin/python bench/durability.py --rounds 1 --n 50

Writes bench/results/durability.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests
from tornado.web import create_signed_value

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ADMIN_KEY, API_KEYS, GATE_KEY, ROOT, SECRET_KEY, Child, CpuWatch,  # noqa: E402
                    Stack, free_port, run_main, write_results)
from gate import seed_visit  # noqa: E402

from tests.fakes import FakeKoala  # noqa: E402
from wxapp.config import Config  # noqa: E402
from wxapp.context import build_context  # noqa: E402
from wxapp.embedded import MongoProcess  # noqa: E402
from wxapp.security import derive_key  # noqa: E402

EMPLOYEE = {"_id": "o-bench-employee", "type": "employee", "phone": "13800000002", "name": "李经理",
            "department": "市场部", "subject_id": 1, "avatar": "", "created_at": 0}


class Side:
    """One server and its databases: `durable` or not."""

    def __init__(self, stack: Stack, name: str, mongo: MongoProcess, mongo_uri: str, redis_db: int):
        self.stack, self.name, self.mongo = stack, name, mongo
        self.mongo_uri = mongo_uri
        self.mongo_db = "bench_" + name.replace("-", "_")
        self.redis_url = stack.redis.url.rsplit("/", 1)[0] + f"/{redis_db}"
        self.app: Child | None = None
        self.cookie = ""
        self.http = requests.Session()

    def config(self) -> Config:
        return Config(mongo_uri=self.mongo_uri, mongo_db=self.mongo_db, redis_url=self.redis_url, secret_key=SECRET_KEY,
                      data_dir=self.stack.tmp / f"var-{self.name}", sms_backend="off")

    def start(self, koala: FakeKoala) -> None:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO_", "REDIS_", "SECRET_", "API_"))}
        env = {**base, "HOST": "127.0.0.1", "PORT": str(port), "MONGO_URI": self.mongo_uri,
               "MONGO_DB": self.mongo_db, "REDIS_URL": self.redis_url, "API_KEYS": API_KEYS, "SECRET_KEY": SECRET_KEY,
               "DATA_DIR": str(self.stack.tmp / f"var-{self.name}"), "SMS_BACKEND": "off",
               "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        self.app = Child(f"server.py ({self.name})", [sys.executable, "server.py"], env,
                         self.stack.tmp / f"server-{self.name}.log", port)
        self.stack.children.append(self.app)
        self.app.start("/healthz")
        asyncio.run(self._seed())
        put = self.http.put(self.app.url + "/v1/config/servers", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                            json={"koala_ip": koala.url.removeprefix("http://").rstrip("/"),
                                  "koala_username": koala.username, "koala_password": koala.password,
                                  "cloud_url": "https://visit.example.com"}, timeout=10).json()
        assert put["code"] == 0, put

    async def _seed(self) -> None:
        """A bound employee with a WeChat session (as the binding flow leaves them)."""
        context = await build_context(self.config())
        ctx = context.services
        try:
            await ctx.storage.db.bindings.insert_one(dict(EMPLOYEE))
            sid = await ctx.wechat_sessions.create({"openid": EMPLOYEE["_id"]})
        finally:
            await context.close()
        secret = derive_key(SECRET_KEY, "cookie-signing").hex()
        self.cookie = create_signed_value(secret, "wx_session", sid).decode()

    def invite(self, phone: str) -> float:
        """One invitation for today, valid now; its latency in ms."""
        now = int(time.time())
        started = time.perf_counter()
        answer = self.http.post(self.app.url + "/v1/subject", cookies={"wx_session": self.cookie}, timeout=10, json={
            "subject_type": 1, "name": "访客", "phone": phone, "proposer": EMPLOYEE["phone"],
            "interviewee": EMPLOYEE["name"], "interviewee_phone": EMPLOYEE["phone"], "start_time": now - 60,
            "end_time": now + 3600}).json()
        elapsed = (time.perf_counter() - started) * 1000
        assert answer["code"] == 0, answer
        return elapsed

    def sign_in(self, phone: str) -> float:
        """The first sign-in of that phone's visit; its latency in ms."""
        started = time.perf_counter()
        answer = self.http.post(self.app.url + "/v1/visit/signin", json={"phone": phone}, timeout=10,
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
        elapsed = (time.perf_counter() - started) * 1000
        assert answer["code"] == 0 and answer["data"]["signin_time"], answer
        return elapsed


def count_writes(side: Side) -> dict:
    """The MongoDB operations one invitation and one first sign-in make (each write is a commit)."""
    import pymongo

    with pymongo.MongoClient(side.mongo_uri) as client:
        def counters():
            return client.admin.command("serverStatus")["opcounters"]

        result = {}
        for name, call in (("invitation", side.invite), ("signin", side.sign_in)):
            time.sleep(1.0)  # let background work (delivery, pass log) settle
            before = counters()
            call("13099999999")
            after = counters()
            result[name] = {op: after[op] - before[op] for op in ("insert", "update", "delete", "command", "query")
                            if after[op] - before[op]}
        return result


def koala_in_a_thread() -> FakeKoala:
    """The fake Koala on an event loop of its own, for the whole run."""
    koala, ready = FakeKoala(), threading.Event()

    def run():
        async def serve():
            koala.start()
            ready.set()
            await asyncio.Event().wait()
        asyncio.run(serve())

    threading.Thread(target=run, daemon=True, name="fake-koala").start()
    ready.wait(10)
    return koala


def gate_load(url: str, body: bytes, seconds: float, threads: int = 8) -> dict:
    """Gate scans from `threads` keep-alive clients for `seconds`: req/s and latency."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.monotonic() + seconds

    def client(out: list[float]):
        http = requests.Session()
        headers = {"Authorization": f"Bearer {GATE_KEY}", "Content-Type": "application/json"}
        while time.monotonic() < stop:
            started = time.perf_counter()
            answer = http.post(url, data=body, headers=headers, timeout=10).json()
            out.append((time.perf_counter() - started) * 1000)
            assert answer["code"] == 0, answer

    workers = [threading.Thread(target=client, args=(out,)) for out in latencies]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    every = [value for out in latencies for value in out]
    return {"rps": len(every) / elapsed, **stats(every)}


def stats(values: list[float]) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(len(values) * q))]  # noqa: E731
    return {"n": len(values), "p50_ms": round(pick(0.5), 2), "p90_ms": round(pick(0.9), 2),
            "p99_ms": round(pick(0.99), 2), "mean_ms": round(sum(values) / len(values), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description="The cost of durable writes, before and after, side by side.")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--n", type=int, default=100, help="invitations and sign-ins per side and round")
    parser.add_argument("--gate-seconds", type=float, default=5, help="seconds of each gate load")
    parser.add_argument("--sync-only", action="store_true",
                        help="also measure a third side: --sync-on-commit with writes acknowledged without j")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args()

    with Stack(keep=args.keep) as stack:
        koala = koala_in_a_thread()
        fast = MongoProcess(stack.tmp / "mongo-before", durable=False)
        fast.start()
        try:
            sides = [Side(stack, "before", fast, fast.uri + "&w=1", 1),
                     Side(stack, "after", stack.mongo, stack.mongo.uri, 2)]
            if args.sync_only:  # information: the server's flag alone, writes without j
                sides.append(Side(stack, "sync-only", stack.mongo, stack.mongo.uri + "&w=1", 3))
            for side in sides:
                side.start(koala)
                side.invite("13000000000")  # warm-up: connections, caches
                side.sign_in("13000000000")
            writes = count_writes(sides[1])
            print(f"MongoDB operations per request (serverStatus opcounters): {writes}", flush=True)
            watch = CpuWatch(stack)
            latencies = {side.name: {"invitation": [], "signin": []} for side in sides}
            gate_runs: dict[str, list[dict]] = {side.name: [] for side in sides}
            bodies = {}
            for side in sides:
                _, qr = asyncio.run(seed_visit_for(side))
                bodies[side.name] = json.dumps({"qrcode": qr, "gate": "east-1"}, ensure_ascii=False).encode()
                gate_load(side.app.url + "/v1/visit/qrcode", bodies[side.name], 1.0)  # warm-up
            others = []
            for round_no in range(args.rounds):
                watch.wait_for_quiet(0.25, 10)
                watch.start()
                phones = [f"131{round_no:02d}{n:06d}" for n in range(args.n)]
                # Request by request, the two sides in turn (the first one alternating), so that
                # whatever else the machine does weighs on both alike.
                for step in ("invitation", "signin"):
                    for n, phone in enumerate(phones):
                        for side in (sides if n % 2 else sides[::-1]):
                            call = side.invite if step == "invitation" else side.sign_in
                            latencies[side.name][step].append(call(phone))
                for side in (sides if round_no % 2 else sides[::-1]):
                    gate_runs[side.name].append(gate_load(side.app.url + "/v1/visit/qrcode", bodies[side.name],
                                                          args.gate_seconds))
                others.append(watch.stop()["others_cores"])
                for side in sides:
                    print(f"[{side.name}] after round {round_no + 1}: invitation "
                          f"{stats(latencies[side.name]['invitation'])}, sign-in {stats(latencies[side.name]['signin'])}, "
                          f"gate {gate_runs[side.name][-1]['rps']:.0f} req/s p99 {gate_runs[side.name][-1]['p99_ms']:.1f} ms",
                          flush=True)
        finally:
            fast.stop()

    results = {}
    print()
    print(f"{'':8} {'invitation p50/p90/p99 ms':>28} {'sign-in p50/p90/p99 ms':>26} {'gate req/s, p50/p99 ms':>26}")
    for name, side in latencies.items():
        inv, sig = stats(side["invitation"]), stats(side["signin"])
        gate = sorted(gate_runs[name], key=lambda r: r["rps"])[len(gate_runs[name]) // 2]
        results[name] = {"invitation": inv, "signin": sig, "gate_median_round": gate, "gate_rounds": gate_runs[name]}
        print(f"{name:8} {inv['p50_ms']:>10} / {inv['p90_ms']} / {inv['p99_ms']:<8} {sig['p50_ms']:>10} / "
              f"{sig['p90_ms']} / {sig['p99_ms']:<8} {gate['rps']:>10.0f}, {gate['p50_ms']:.1f} / {gate['p99_ms']:.1f}")
    print(f"cores used by other processes, per round: {others}")
    print(f"MongoDB operations per request: {writes}")
    path = write_results("durability", {"rounds": args.rounds, "n": args.n, "others_cores": others,
                                        "operations_per_request": writes, **results})
    print(f"written to {path}")
    return 0


async def seed_visit_for(side: Side):
    """gate.py's signed-in visit, in this side's databases."""
    class View:  # what seed_visit reads of a Stack
        def config(self):
            return side.config()
    return await seed_visit(View())


if __name__ == "__main__":
    os.chdir(ROOT)
    run_main(main)
