"""Shared by the benchmarks: embedded databases and the real `python server.py` in child processes,
all on loopback and free ports in a temporary folder, and stopped again whatever happens."""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wxapp.config import Config  # noqa: E402
from wxapp.embedded import MongoProcess, RedisProcess, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
ADMIN_KEY = "bench-admin-key-0001"
GATE_KEY = "bench-gate-key-0001"
API_KEYS = f"admin:{ADMIN_KEY},gate:{GATE_KEY}"
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Pre-exec hook: the kernel sends SIGTERM to the child if this benchmark is killed outright."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks stop every child process."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


def run_main(main) -> None:
    """A benchmark's entry point: exit with what `main()` returns; Ctrl-C (or SIGTERM) ends it after
    every child process was stopped by the `finally` blocks on its way out."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        sys.exit(130)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Wait until `url` answers HTTP 200 (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


class Child:
    """A Python process of ours (server.py or bare_server.py) with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path, port: int, cwd: Path = ROOT):
        self.name, self.argv, self.env, self.log, self.port, self.cwd = name, argv, env, log, port, cwd
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, health_path: str) -> "Child":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        wait_http(self.url + health_path, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stack:
    """SecantusDB + redis-server (wxapp.embedded) in a temporary folder, plus the children we start.

    Use as a context manager: on exit every process is stopped (children first, then the databases)
    and the folder is removed (kept with --keep for a look at the logs)."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="visitor-bench-"))
        self.redis = RedisProcess(self.tmp / "redis")
        self.mongo = MongoProcess(self.tmp / "mongo")
        self.children: list[Child] = []

    def __enter__(self) -> "Stack":
        stop_on_sigterm()
        try:
            self.redis.start()
            self.mongo.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        for proc in (self.mongo, self.redis):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.keep:
            print(f"logs and data kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, port: int = 8000, mongo_db: str = "visitor") -> Config:
        """The configuration the server gets from its environment, for build_context in this process."""
        return Config(host="127.0.0.1", port=port, data_dir=self.tmp / "var", mongo_uri=self.mongo.uri,
                      mongo_db=mongo_db, redis_url=self.redis.url, secret_key=SECRET_KEY,
                      api_keys=(("admin", ADMIN_KEY), ("gate", GATE_KEY)), sms_backend="off")

    def start_app(self, root: Path = ROOT, name: str = "server.py", mongo_db: str = "visitor",
                  script: str = "server.py") -> Child:
        """The real server: `python server.py` with the databases given through its environment
        (`root`: another checkout of it, e.g. an older version to compare with; `script`: a variant
        of server.py in bench/)."""
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO_", "REDIS_", "SECRET_", "API_"))}
        env = {**base, "HOST": "127.0.0.1", "PORT": str(port), "MONGO_URI": self.mongo.uri, "MONGO_DB": mongo_db,
               "REDIS_URL": self.redis.url, "API_KEYS": API_KEYS, "SECRET_KEY": SECRET_KEY,
               "DATA_DIR": str(self.tmp / "var"), "SMS_BACKEND": "off", "PYTHONUNBUFFERED": "1"}
        child = Child(name, [sys.executable, script], env, self.tmp / f"server-{mongo_db}.log", port, root)
        self.children.append(child)
        return child.start("/healthz")

    def start_bare(self, redis: bool = False) -> Child:
        """bench/bare_server.py: the minimal Tornado JSON POST endpoint to compare the gate with
        (with `redis`, plus one Redis GET per request)."""
        port = free_port()
        argv = [sys.executable, "bench/bare_server.py", "--port", str(port)]
        if redis:
            argv += ["--redis-url", self.redis.url]
        name = "bare_server.py" + (" --redis-url" if redis else "")
        child = Child(name, argv, dict(os.environ), self.tmp / f"bare-{port}.log", port)
        self.children.append(child)
        return child.start("/ping")


def machine() -> dict:
    """Where the figures come from."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release()}


def write_results(name: str, data: dict) -> Path:
    """bench/results/<name>.json (the folder is gitignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, ensure_ascii=False, indent=2) + "\n")
    return path


class CpuWatch:
    """CPU used during a run, by each of our processes and by the rest of the machine (processes
    that are not ours: the benchmark shares the machine with whatever else runs, which skews it)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ticks(pid: int | str, children: bool = False) -> int:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime stime (+ cutime cstime: children waited for, i.e. wrk for this process)
            return sum(int(x) for x in fields[11:15 if children else 13])
        return 0

    def _ours(self) -> dict[str, int]:
        procs = {"bench+wrk": None, "secantus": self.stack.mongo.proc, "redis": self.stack.redis.proc}
        procs.update({child.name: child.proc for child in self.stack.children})
        ticks = {}
        for name, proc in procs.items():
            if proc is None:
                ticks[name] = self._ticks("self", children=True)
            elif proc.poll() is None:
                ticks[name] = self._ticks(proc.pid)
        return ticks

    @staticmethod
    def _busy() -> int:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(values) - values[3] - values[4]  # minus idle and iowait

    def start(self) -> None:
        self._t0, self._busy0, self._ours0 = time.monotonic(), self._busy(), self._ours()

    def stop(self) -> dict:
        """Cores used on average since start(): `ours_cores`, `others_cores`, `idle_cores`, and
        `cpu_seconds` per process of ours."""
        wall = time.monotonic() - self._t0
        busy = (self._busy() - self._busy0) / self.hz
        now = self._ours()
        seconds = {name: (now[name] - self._ours0[name]) / self.hz for name in now if name in self._ours0}
        ours = sum(seconds.values())
        cpus = os.cpu_count() or 1
        return {"ours_cores": round(ours / wall, 2), "others_cores": round(max(0.0, busy - ours) / wall, 2),
                "idle_cores": round(max(0.0, cpus - busy / wall), 2),
                "cpu_seconds": {name: round(value, 2) for name, value in seconds.items()}}

    def others_now(self, seconds: float = 1.0) -> float:
        """Cores used by other processes over the next `seconds` (before a run)."""
        self.start()
        time.sleep(seconds)
        return self.stop()["others_cores"]

    def wait_for_quiet(self, limit: float = 0.25, patience: float = 60.0) -> float:
        """Wait (up to `patience` s) until other processes use less than `limit` cores; returns their use."""
        deadline = time.monotonic() + patience
        while True:
            others = self.others_now()
            if others < limit or time.monotonic() > deadline:
                if others >= limit:
                    print(f"WARNING: other processes use {others:.2f} cores: the figures will suffer", flush=True)
                return others
            print(f"other processes use {others:.2f} cores; waiting for a quieter machine ...", flush=True)
            time.sleep(4)


class PySpy:
    """Optional: sample a process with py-spy (if installed) while a block runs, into an SVG
    flame graph under bench/results/. Sampling slows the process a little: figures taken
    meanwhile are for finding where time goes, not for the goals."""

    def __init__(self, pid: int, name: str, enabled: bool, rate: int = 100):
        self.pid, self.enabled, self.rate = pid, enabled and shutil.which("py-spy") is not None, rate
        self.path = RESULTS / f"{name}.svg"
        self.proc: subprocess.Popen | None = None
        if enabled and not self.enabled:
            print("py-spy is not installed (pip install py-spy): no profile", flush=True)

    def __enter__(self) -> "PySpy":
        if self.enabled:
            RESULTS.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.pid), "--rate", str(self.rate), "--nonblocking",
                 "--format", "flamegraph", "--output", str(self.path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            print(f"py-spy flame graph of pid {self.pid}: {self.path}", flush=True)
