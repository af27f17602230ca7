"""Embedded databases: SecantusDB (MongoDB-compatible) and redis-server as supervised child processes,
with their data private to this user and a generated password each."""
from __future__ import annotations

import collections
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

from . import security
from .storage import ensure_root_user

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Everything the databases write is readable by this user only (files 0600, folders 0700).
_UMASK = 0o077


class EmbeddedError(RuntimeError):
    """An embedded database could not be started."""


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as a folder only this user can enter; tighten it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def make_private(root: Path) -> None:
    """Restrict an existing data folder: folders 0700 and files 0600 (data written before this rule)."""
    if not root.is_dir():
        return
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for names, mode in ((dirs, 0o700), (files, 0o600)):
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.islink(path):  # not what a link points to, which may be anyone's
                    os.chmod(path, mode)


def read_or_create_secret(path: Path, make) -> str:
    """The secret stored in `path`, written with `make()` the first time; EmbeddedError when empty."""
    value = security.read_or_create_secret(path, make)
    if not value:
        raise EmbeddedError(f"{path} is empty: delete it to generate a new one")
    return value


def _child_setup(sig: int):
    """A pre-exec hook: private files, and if the server is killed outright the kernel sends `sig`."""
    def hook():
        os.umask(_UMASK)
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass
    return hook


class ChildProcess:
    """A database server run as a child of this process, stopped with it."""

    # Sent by the kernel when the server dies without stopping its children. It is tied to the
    # thread that started the child, so children are started by threads that live as long as they do.
    death_signal = signal.SIGTERM

    def __init__(self, name: str, port: int, log_path: Path):
        self.name = name
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        """The command line that runs the server."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Work to do once before the first start (subclasses)."""

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start the process and wait until it answers on its port."""
        self.prepare()
        self._spawn(self.argv(), ready_timeout)

    def _spawn(self, argv: list[str], ready_timeout: float) -> None:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            # A session of its own: Ctrl-C in a terminal reaches only the server,
            # which then stops the databases in order.
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_child_setup(self.death_signal),
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

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (reaping it), else None."""
        return None if self.proc is None else self.proc.poll()

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
    """redis-server with its data in a folder, listening on loopback only, with a generated password.

    The password is in `<folder>/redis.conf` (mode 0600), so it never shows in the process list.
    Persistence: appendonly with fsync every second. Redis writes each command to the AOF before it
    answers, so a `kill -9` of redis-server (or of everything) loses nothing it confirmed; only a
    crash of the whole machine can lose the last second (sessions, codes: users log in again)."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise EmbeddedError("redis-server is not installed (Debian package redis-server; `make run` installs it)")
        self.data_dir = private_dir(data_dir).resolve()
        self.conf_path = self.data_dir / "redis.conf"
        conf = read_or_create_secret(self.conf_path, lambda: f"requirepass {secrets.token_hex(24)}\n")
        self.password = conf.split(None, 1)[1].strip()
        super().__init__("redis-server", port or free_port(), self.data_dir / "redis.log")

    def argv(self) -> list[str]:
        return [
            self.binary, str(self.conf_path), "--bind", "127.0.0.1", "--port", str(self.port),
            "--protected-mode", "yes", "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "60 1", "--daemonize", "no", "--logfile", "",
            "--loglevel", "warning",
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while answer.count(b"\r\n") < 2:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    answer += chunk
                return answer == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False

    @property
    def url(self) -> str:
        """The URL clients use (it carries the password)."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"


class MongoProcess(ChildProcess):
    """SecantusDB, the MongoDB-compatible server from PyPI, storing under a folder.

    `durable` (the default): every commit is flushed before it is acknowledged (`--sync-on-commit`),
    so a write the API confirmed survives `kill -9`. With a folder (not `:memory:`) it runs with
    `--auth`: a SCRAM user with a generated password is created once without auth, and the
    credentials are kept beside the folder in `<folder>-credentials.json` (mode 0600)."""

    # SecantusDB's SIGTERM handler deadlocks when a second signal arrives during shutdown,
    # which happens when its parent dies; its storage recovers from its journal after a kill.
    death_signal = signal.SIGKILL
    user = "visitor"

    def __init__(self, storage_path: Path | str, port: int | None = None, *, durable: bool = True):
        port = port or free_port()
        self.durable = durable
        if isinstance(storage_path, Path):
            private_dir(storage_path.parent)
            self.storage_arg = str(private_dir(storage_path).resolve())
            self.credentials_path: Path | None = storage_path.parent / f"{storage_path.name}-credentials.json"
            log_path = storage_path.parent / "mongo.log"
            self.password = json.loads(read_or_create_secret(self.credentials_path, lambda: json.dumps(
                {"user": self.user, "password": secrets.token_hex(24), "created": False})))["password"]
        else:
            self.storage_arg = storage_path
            self.credentials_path = None
            self.password = ""
            log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"secantus-{port}.log"
        super().__init__("SecantusDB", port, log_path)

    def argv(self, auth: bool = True) -> list[str]:
        argv = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", self.storage_arg, "--log-level", "WARNING"]
        if self.durable:
            argv.append("--sync-on-commit")
        if auth and self.credentials_path is not None:
            argv.append("--auth")
        return argv

    def prepare(self) -> None:
        """Create the SCRAM user once, with auth off, before the first start with --auth."""
        if self.credentials_path is None:
            return
        stored = json.loads(self.credentials_path.read_text())
        # A new, empty storage folder (the old one removed) has no user yet, whatever the file says.
        if stored.get("created") and (Path(self.storage_arg) / "WiredTiger").exists():
            return
        log.info("Creating the SecantusDB user %r (first start of %s)", self.user, self.storage_arg)
        self._spawn(self.argv(auth=False), 60.0)
        try:
            ensure_root_user(f"mongodb://127.0.0.1:{self.port}/", self.user, stored["password"])
        finally:
            self.stop()
        tmp = self.credentials_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({**stored, "created": True}))
        os.replace(tmp, self.credentials_path)

    @property
    def uri(self) -> str:
        """The URI clients use (it carries the credentials)."""
        if self.credentials_path is None:
            return f"mongodb://127.0.0.1:{self.port}/"
        return f"mongodb://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/?authSource=admin"


class DataDirLock:
    """An exclusive lock on DATA_DIR, so two servers never run one embedded database twice."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / ".lock"
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise EmbeddedError naming the holder."""
        private_dir(self.path.parent)
        handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
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


class Supervised:
    """One embedded database under watch: restarted when it dies, given up on when it keeps dying."""

    def __init__(self, key: str, child: ChildProcess, max_restarts: int, window: float):
        self.key = key
        self.child = child
        self.max_restarts = max_restarts
        self.window = window
        self.crashes: collections.deque[float] = collections.deque()
        self.restarts = 0
        self.given_up = ""  # why, once the supervisor stopped restarting it

    def status(self) -> dict:
        """What /healthz shows of this child."""
        state = "failed" if self.given_up else ("running" if self.child.exit_code() is None else "restarting")
        data = {"state": state, "port": self.child.port, "restarts": self.restarts}
        if self.given_up:
            data["reason"] = self.given_up
        return data


class EmbeddedServices:
    """Starts what the configuration leaves unset (MONGO_URI, REDIS_URL), restarts what dies, stops it again."""

    def __init__(self, data_dir: Path, *, mongo: bool, redis: bool, check_interval: float = 0.5,
                 max_restarts: int = 5, window: float = 60.0):
        self.data_dir = data_dir
        self.want_mongo = mongo
        self.want_redis = redis
        self.check_interval = check_interval
        self.max_restarts = max_restarts
        self.window = window
        self.lock = DataDirLock(data_dir)
        self.mongo: MongoProcess | None = None
        self.redis: RedisProcess | None = None
        self.watched: list[Supervised] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the embedded databases and their supervisor; on failure nothing is left running."""
        if not (self.want_mongo or self.want_redis):
            return
        private_dir(self.data_dir)
        self.lock.acquire()
        make_private(self.data_dir)
        # The children are started by the supervisor's thread: the kernel's parent-death signal
        # follows the thread that forked, so a child must not outlive the thread that started it.
        self._thread = threading.Thread(target=self._run, name="embedded-supervisor", daemon=True)
        self._thread.start()
        while not self._ready.wait(0.2):
            if not self._thread.is_alive():
                break
        if self._failed is not None:
            self.stop()
            raise self._failed

    def _run(self) -> None:
        try:
            if self.want_redis:
                self.redis = RedisProcess(self.data_dir / "redis")
                self.redis.start()
                self.watched.append(Supervised("redis", self.redis, self.max_restarts, self.window))
            if self.want_mongo:
                self.mongo = MongoProcess(self.data_dir / "mongo")
                self.mongo.start()
                self.watched.append(Supervised("mongo", self.mongo, self.max_restarts, self.window))
        except BaseException as exc:  # handed to start(), which raises it in the main thread
            self._failed = exc
        self._ready.set()
        if self._failed is None:
            while not self._stopping.wait(self.check_interval):
                for item in self.watched:
                    try:
                        self._check(item)
                    except Exception:  # this thread must outlive its children (parent-death signal)
                        log.exception("Supervising the embedded %s failed", item.child.name)
        for proc in (self.mongo, self.redis):
            if proc is not None:
                proc.stop()

    def _check(self, item: Supervised) -> None:
        child = item.child
        code = child.exit_code()
        if code is None or item.given_up or self._stopping.is_set():
            return
        now = time.monotonic()
        item.crashes.append(now)
        while item.crashes and item.crashes[0] < now - item.window:
            item.crashes.popleft()
        if len(item.crashes) > item.max_restarts:
            item.given_up = (f"{child.name} exited {len(item.crashes)} times within {item.window:.0f}s "
                             f"(last exit code {code}); not restarted again; see {child.log_path}")
            log.critical("Embedded %s: giving up: %s. Fix the cause and restart the server.", child.name,
                         item.given_up)
            return
        log.error("Embedded %s (pid %d) exited with code %s; restarting it on port %d (restart %d)",
                  child.name, child.proc.pid, code, child.port, item.restarts + 1)
        try:
            child.start(ready_timeout=30.0)
        except (EmbeddedError, OSError) as exc:
            log.error("Embedded %s did not come back: %s", child.name, exc)
            return
        item.restarts += 1
        log.warning("Embedded %s restarted (pid %d, port %d)", child.name, child.proc.pid, child.port)

    def health(self) -> dict:
        """Each embedded database's state for /healthz (empty when none is embedded)."""
        return {item.key: item.status() for item in self.watched}

    def given_up(self) -> list[str]:
        """Why the supervisor stopped restarting a child, for each one it gave up on."""
        return [item.given_up for item in self.watched if item.given_up]

    def stop(self) -> None:
        """Stop the supervisor, which stops whatever it started."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(120)
        self.lock.release()
