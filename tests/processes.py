"""Helpers for tests that run `python server.py` as an operator would, and kill what it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from wxapp.embedded import MongoProcess, RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "process-test-admin-key"


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    found, frontier = set(), {pid}
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent and int(entry.name) not in found:
                    found.add(int(entry.name))
                    frontier.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate, timeout: float, step: float = 0.1):
    """Poll `predicate` until it returns something true; that value, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class Server:
    """server.py in a child process, with its log in a file."""

    def __init__(self, tmp: Path, **env):
        self.port = free_port()
        self.log = tmp / f"server-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO_", "REDIS_", "SECRET_"))}
        self.env = {**base, "PORT": str(self.port), "API_KEYS": f"admin:{KEY}", "LOG_LEVEL": "INFO", **env}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["DATA_DIR"])

    def start(self) -> "Server":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if self.health().get("code") == 0:
                return self
            time.sleep(0.2)
        raise AssertionError("server did not become healthy:\n" + self.log.read_text())

    def run(self, timeout: float = 60) -> int:
        """Run server.py to its end (for a server expected to refuse to start); its exit code."""
        with open(self.log, "ab") as out:
            return subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode

    def health(self) -> dict:
        """GET /healthz's body, or {} when the server does not answer."""
        try:
            return requests.get(self.url + "/healthz", timeout=3).json()
        except (requests.RequestException, ValueError):
            return {}

    def embedded_pid(self, name: str) -> int:
        """The pid of the embedded redis-server ("redis") or SecantusDB ("mongo") child."""
        marker = b"redis-server" if name == "redis" else b"secantus"
        for pid in children_of(self.proc.pid):
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
                    return pid
            except OSError:
                continue
        raise AssertionError(f"no running embedded {name} under server pid {self.proc.pid}")

    def database_urls(self) -> tuple[str, str]:
        """The MongoDB URI and Redis URL of the embedded databases, credentials included (from DATA_DIR)."""
        ports = self.health()["data"]["embedded"]
        mongo = MongoProcess(self.data_dir / "mongo", port=ports["mongo"]["port"])
        redis = RedisProcess(self.data_dir / "redis", port=ports["redis"]["port"])
        return mongo.uri, redis.url

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
