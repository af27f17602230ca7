"""Embedded databases: SecantusDB (MongoDB-compatible) and redis-server as child processes."""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded database could not be started."""


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent(sig: int):
    """A pre-exec hook: if the server is killed outright, the kernel sends the child `sig`."""
    def hook():
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass
    return hook


class ChildProcess:
    """A database server run as a child of this process, stopped with it."""

    # Sent by the kernel when the server dies without stopping its children.
    death_signal = signal.SIGTERM

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path):
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start the process and wait until it answers on its port."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            # A session of its own: Ctrl-C in a terminal reaches only the server,
            # which then stops the databases in order.
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent(self.death_signal),
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
            if self.ready():
                log.info("Embedded %s is ready on 127.0.0.1:%d (pid %d)", self.name, self.port, self.proc.pid)
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedError(f"{self.name} did not answer within {ready_timeout:.0f}s; see {self.log_path}")

    def ready(self) -> bool:
        """Whether the server accepts connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the process to stop, and kill it if it does not in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()
        log.info("Embedded %s stopped", self.name)


class RedisProcess(ChildProcess):
    """redis-server with its data in a folder, listening on loopback only."""

    def __init__(self, data_dir: Path, port: int | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedError("redis-server is not installed (Debian package redis-server; `make run` installs it)")
        port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
            "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--save", "60 1",
            "--daemonize", "no", "--logfile", "", "--loglevel", "warning",
        ]
        super().__init__("redis-server", argv, port, data_dir / "redis.log")

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        """The URL clients use."""
        return f"redis://127.0.0.1:{self.port}/0"


class MongoProcess(ChildProcess):
    """SecantusDB, the MongoDB-compatible server from PyPI, storing under a folder."""

    # SecantusDB's SIGTERM handler deadlocks when a second signal arrives during shutdown,
    # which happens when its parent dies; its storage recovers from its journal after a kill.
    death_signal = signal.SIGKILL

    def __init__(self, storage_path: Path | str, port: int | None = None):
        port = port or free_port()
        if isinstance(storage_path, Path):
            storage_path.mkdir(parents=True, exist_ok=True)
            log_path = storage_path.parent / "mongo.log"
            storage_arg = str(storage_path.resolve())
        else:
            log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"secantus-{port}.log"
            storage_arg = storage_path
        argv = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                "--storage-path", storage_arg, "--log-level", "WARNING"]
        super().__init__("SecantusDB", argv, port, log_path)

    @property
    def uri(self) -> str:
        """The URI clients use."""
        return f"mongodb://127.0.0.1:{self.port}/"


class DataDirLock:
    """An exclusive lock on DATA_DIR, so two servers never run one embedded database twice."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / ".lock"
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise EmbeddedError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise EmbeddedError(
                f"{self.path.parent} is in use by server pid {holder}; to run several servers, "
                "set MONGO_URI and REDIS_URL to shared databases"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Give the lock up."""
        if self._file is not None:
            self._file.close()
            self._file = None


class EmbeddedServices:
    """Starts what the configuration leaves unset (MONGO_URI, REDIS_URL) and stops it again."""

    def __init__(self, data_dir: Path, *, mongo: bool, redis: bool):
        self.data_dir = data_dir
        self.want_mongo = mongo
        self.want_redis = redis
        self.lock = DataDirLock(data_dir)
        self.mongo: MongoProcess | None = None
        self.redis: RedisProcess | None = None

    def start(self) -> None:
        """Start the embedded databases; on failure nothing is left running."""
        if not (self.want_mongo or self.want_redis):
            return
        self.lock.acquire()
        try:
            if self.want_redis:
                self.redis = RedisProcess(self.data_dir / "redis")
                self.redis.start()
            if self.want_mongo:
                self.mongo = MongoProcess(self.data_dir / "mongo")
                self.mongo.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop whatever was started."""
        for proc in (self.mongo, self.redis):
            if proc is not None:
                proc.stop()
        self.lock.release()
