"""`make run`: prepare the database and start the whole demo on this machine.

Steps: read .env if present, migrate, compile the translations, load the knowledge base and
the demo data, start or reuse Redis, start the winsim demo fleet, a Celery worker (with beat)
and uvicorn, then print the URL and the demo logins. Ctrl-C or SIGTERM stops everything this
command started, in reverse order, and nothing it reused. If any child dies, its last lines are
shown and the rest is stopped (exit status 1).

Environment: PORT (default 8000), HOST (default 127.0.0.1), REDIS_URL, KAIKETSU_PROFILE (the
winsim profile, default winsim/profiles/demo.yaml), plus the portal's own settings (.env.example).
DEBUG defaults to true here: this is the developer's demo, not a production server (use
docker-compose.yml or your own process manager for that).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from services import (  # noqa: E402
    ROOT,
    VAR_DIR,
    Service,
    compilemessages_argv,
    ensure_redis,
    port_answers,
    wait_until,
    worker_argv,
)

PYTHON = sys.executable
DEFAULT_PROFILE = "winsim/profiles/demo.yaml"


class Stop(Exception):
    """Raised in the main thread by SIGINT (Ctrl-C) or SIGTERM."""


class SetupError(Exception):
    """A preparation step or a service failed to start; the message says which and why."""


_print_lock = threading.Lock()


def say(message: str) -> None:
    """Print one of run.py's own messages (never interleaved with a child's line)."""
    with _print_lock:
        print(f"run: {message}", flush=True)


def echo_child(name: str, line: str) -> None:
    """Print a child's output line behind its name, so four logs stay readable in one terminal."""
    with _print_lock:
        print(f"{name:<7}| {line}", flush=True)


def child_env() -> dict[str, str]:
    """The environment every step and child gets: .env under the real environment, demo defaults."""
    env_file = ROOT / ".env"
    if env_file.exists():
        import environ  # django-environ, the same reader portal/settings.py uses

        environ.Env.read_env(env_file)  # never overrides a variable already set
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    env.setdefault("DEBUG", "true")
    env["PYTHONUNBUFFERED"] = "1"  # children's lines reach the terminal as they are written
    return env


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    """Run `manage.py ARGS` in the foreground; raise SetupError naming the step if it fails."""
    say("manage.py " + " ".join(args))
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if capture and result.stdout:
        sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise SetupError(f"manage.py {args[0]} failed with exit status {result.returncode}")
    return result.stdout or ""


def winsim_hosts(service: Service) -> list[dict[str, object]]:
    """The JSON lines winsim printed so far (one per listening host)."""
    hosts = []
    for line in service.lines():
        if line.startswith("{"):
            try:
                hosts.append(json.loads(line))
            except ValueError:
                continue
    return hosts


def wait_for_winsim(service: Service, timeout: float = 60.0) -> list[dict]:
    """Wait until winsim prints its host lines (it writes them together once all listen)."""
    if service.wait_for_line(r"^\{", timeout):
        time.sleep(0.3)  # the rest of the same write is on its way through the pipe
    hosts = winsim_hosts(service)
    if service.poll() is not None or not hosts:
        raise SetupError("winsim did not start its hosts")
    return hosts


class Supervisor:
    """The children this command started, stopped in reverse order."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def start(self, service: Service) -> Service:
        """Start `service` and remember it for shutdown."""
        self.services.append(service)
        return service.start()

    def adopt(self, service: Service) -> None:
        """Remember a service something else already started (the private Redis)."""
        self.services.append(service)

    def first_dead(self) -> Service | None:
        """A child that exited on its own, if any."""
        return next((s for s in self.services if s.poll() is not None), None)

    def stop_all(self) -> None:
        """Stop every child, newest first; a second Ctrl-C kills whatever is left at once."""
        for service in reversed(self.services):
            if service.poll() is None:
                say(f"stopping {service.name} (pid {service.pid})")
            service.stop(timeout=10.0)

    def kill_all(self) -> None:
        """SIGKILL every child's process group (the impatient second Ctrl-C)."""
        for service in self.services:
            service.kill()


def report_death(service: Service) -> None:
    """Say which child died, with its exit status and last lines."""
    say(f"{service.name} exited with status {service.poll()}; its last lines:")
    for line in service.tail(15):
        echo_child(service.name, line)


def start_everything(sup: Supervisor, env: dict[str, str]) -> tuple[str, str]:
    """Prepare the database and start the services; return (portal URL, demo login text)."""
    host = env.get("HOST", "127.0.0.1")
    port = int(env.get("PORT", "8000"))
    profile = ROOT / env.get("KAIKETSU_PROFILE", DEFAULT_PROFILE)
    if port_answers(host, port):
        raise SetupError(f"{host}:{port} is already taken: stop that server or set PORT=...")
    VAR_DIR.mkdir(exist_ok=True)

    try:
        redis_url, redis_service = ensure_redis(env.get("REDIS_URL"))
    except RuntimeError as error:  # no Redis answers and none can be started here
        raise SetupError(str(error)) from error
    if redis_service:
        sup.adopt(redis_service)
        say(f"started a private Redis at {redis_url} (stops with this command)")
    else:
        say(f"reusing the Redis at {redis_url}")
    env["REDIS_URL"] = redis_url

    manage(env, "migrate", "--noinput")
    compile_argv = compilemessages_argv()
    if compile_argv:
        manage(env, *compile_argv)
    manage(env, "load_kb")
    logins = manage(env, "load_demo", "--profile", str(profile), capture=True)

    winsim = sup.start(
        Service(
            "winsim",
            [PYTHON, "-m", "winsim", "--profile", str(profile), "--print-json"],
            env=env,
            sink=echo_child,
        )
    )
    hosts = wait_for_winsim(winsim)
    say(f"winsim serves {len(hosts)} demo hosts")

    beat_schedule = str(VAR_DIR / "celerybeat-schedule")
    worker = sup.start(
        Service(
            "worker", worker_argv(PYTHON, beat_schedule=beat_schedule), env=env, sink=echo_child
        )
    )
    web_argv = [PYTHON, "-m", "uvicorn", "portal.asgi:application"]  # WhiteNoise serves /static/
    web_argv += ["--host", host, "--port", str(port)]
    # Live job pages hold an SSE connection open: do not wait for them on Ctrl-C.
    web_argv += ["--timeout-graceful-shutdown", "3"]
    web = sup.start(Service("web", web_argv, env=env, sink=echo_child))
    if not wait_until(lambda: web.poll() is not None or port_answers(host, port), 60):
        raise SetupError(f"uvicorn did not listen on {host}:{port} within 60 s")
    if web.poll() is not None:
        raise SetupError("uvicorn exited during startup")
    if not worker.wait_for_line(r"celery@\S+ ready", 60):
        raise SetupError("the Celery worker did not report ready within 60 s")
    return f"http://{host}:{port}/", logins


def banner(url: str, logins: str) -> None:
    """The lines a person needs: where to go and how to log in."""
    rule = "=" * 72
    text = [rule, f"Kaiketsu is running: {url}", ""]
    text += ["  " + line for line in logins.strip().splitlines()]
    text += ["", "Press Ctrl-C to stop everything started here.", rule]
    with _print_lock:
        print("\n".join(text), flush=True)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def main() -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or until a child dies or a step fails (exit 1)."""
    os.chdir(ROOT)
    sup = Supervisor()
    # Set both explicitly: a shell starts background jobs with SIGINT ignored, and
    # `kill -INT` must still stop us cleanly.
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    status = 0
    try:
        env = child_env()
        url, logins = start_everything(sup, env)
        banner(url, logins)
        while (dead := sup.first_dead()) is None:
            time.sleep(0.25)
        report_death(dead)
        status = 1
    except (KeyboardInterrupt, Stop):  # KeyboardInterrupt: a Ctrl-C before the handler is set
        say("stop requested")
    except SetupError as error:
        say(f"error: {error}")
        if dead := sup.first_dead():
            report_death(dead)
        status = 1
    finally:
        # Further signals while stopping must not abort the cleanup half-way: escalate instead.
        def _escalate(signum: int, frame: FrameType | None) -> None:
            sup.kill_all()

        signal.signal(signal.SIGINT, _escalate)
        signal.signal(signal.SIGTERM, _escalate)
        sup.stop_all()
    say("stopped")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
