"""`make run`: prepare the database and start the whole demo on this machine.

Steps: read .env if present, migrate, compile the translations, load the knowledge base and
the demo data, start or reuse Redis, start the winsim demo fleet, a Celery worker (with beat)
and uvicorn, then print the URL and the demo logins. Ctrl-C or SIGTERM (once or repeated, to
this process or its group) stops everything this command started, in reverse order, and
nothing it reused, with exit status 0 (StopSignals). If any child dies, its last lines are
shown and the rest is stopped (exit status 1).

Environment: PORT (default 8000), HOST (default 127.0.0.1), REDIS_URL, KAIKETSU_PROFILE (the
winsim profile, default winsim/profiles/demo.yaml), plus the portal's own settings (.env.example).
DEBUG defaults to true here: this is the developer's demo, not a production server (use
docker-compose.yml or your own process manager for that).

The settings the children get (DEBUG, DATABASE_URL, REDIS_URL, KAIKETSU_QUEUE) are written to
var/demo.env ($KAIKETSU_DEMO_ENV), which manage.py reads: a second terminal's
`manage.py diagnose` talks to this demo's database, Redis and worker (portal/envfiles.py).
"""

from __future__ import annotations

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
    ServiceError,
    compilemessages_argv,
    ensure_redis,
    port_answers,
    profile_host_count,
    wait_for_web,
    wait_for_winsim,
    wait_for_worker,
    web_argv,
    winsim_argv,
    worker_argv,
)

sys.path.insert(0, str(ROOT))
from portal.envfiles import write_demo_env  # noqa: E402

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
    """The environment every step and child gets: .env under the real environment, demo defaults.

    The previous run's var/demo.env is not read: this run decides its settings afresh.
    """
    env_file = ROOT / ".env"
    if env_file.exists():
        import environ  # django-environ, the same reader manage.py uses

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
        # Out of the terminal's process group: a Ctrl-C stops run.py, which ends the step.
        start_new_session=True,
    )
    if capture and result.stdout:
        sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise SetupError(f"manage.py {args[0]} failed with exit status {result.returncode}")
    return result.stdout or ""


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


def agent_hosts(profile: Path) -> list[str]:
    """The hosts of a winsim profile whose agent is switched on."""
    from winsim.hosts import load_profile  # deferred: needs the venv

    return [h.name for h in load_profile(profile) if h.has_agent and not h.agent_offline]


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
    say(f"settings for manage.py in other terminals: {write_demo_env(env)}")

    try:
        expected = profile_host_count(profile)
        argv = winsim_argv(profile)
        # The laptops with an online agent (issue #14): as an administrator would, give each
        # a one-time code; they enrol and poll once the web below answers (they back off).
        for name in agent_hosts(profile):
            code = manage(env, "agent_token", "--machine", name, "--hours", "1", capture=True)
            argv += ["--agent-token", f"{name}={code.strip()}"]
        if "--agent-token" in argv:
            argv += ["--portal", f"http://{host}:{port}"]
        service = Service("winsim", argv, env=env, sink=echo_child, history=expected + 500)
        hosts = wait_for_winsim(sup.start(service), expected)
        say(f"winsim serves {len(hosts)} demo hosts")
        # One beat schedule per demo port: two demos on one checkout never share the file.
        beat_schedule = VAR_DIR / f"celerybeat-schedule-{port}"
        argv = worker_argv(beat_schedule=beat_schedule)
        worker = sup.start(Service("worker", argv, env=env, sink=echo_child))
        web = sup.start(Service("web", web_argv(host, port), env=env, sink=echo_child))
        wait_for_web(web, host, port)
        wait_for_worker(worker)
    except ServiceError as error:
        raise SetupError(str(error).splitlines()[0]) from error
    return f"http://{host}:{port}/", logins


def banner(url: str, logins: str) -> None:
    """The lines a person needs: where to go and how to log in."""
    rule = "=" * 72
    text = [rule, f"Kaiketsu is running: {url}", ""]
    text += ["  " + line for line in logins.strip().splitlines()]
    text += ["", "Press Ctrl-C to stop everything started here.", rule]
    with _print_lock:
        print("\n".join(text), flush=True)


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM: the first one stops the demo, exit status 0.

    Only the first signal raises Stop, and only while the demo starts or runs (`armed`): a
    stop arriving twice must never interrupt the cleanup. It does arrive twice: a signal sent
    to `make run`'s process group reaches make and this process, and make forwards its own
    SIGTERM here. A repeat within REPEAT_IS_SAME seconds is that same request; a later one
    (an impatient second Ctrl-C) SIGKILLs what is still running, and the cleanup goes on.
    """

    REPEAT_IS_SAME = 2.0

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.armed = False
        self.first_at: float | None = None

    def install(self) -> None:
        """Handle both explicitly: a shell starts background jobs with SIGINT ignored, and
        `kill -INT` must still stop us cleanly."""
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.armed:
            self.armed = False
            self.first_at = now
            raise Stop(signal.Signals(signum).name)
        if self.first_at is None:
            self.first_at = now  # a stop during the cleanup after an error: already stopping
        elif now - self.first_at > self.REPEAT_IS_SAME:
            self.sup.kill_all()


def main() -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or until a child dies or a step fails (exit 1)."""
    os.chdir(ROOT)
    sup = Supervisor()
    signals = StopSignals(sup)
    status = 0
    try:
        signals.armed = True
        signals.install()
        env = child_env()
        url, logins = start_everything(sup, env)
        banner(url, logins)
        while (dead := sup.first_dead()) is None:
            time.sleep(0.25)
        signals.armed = False
        report_death(dead)
        status = 1
    except (KeyboardInterrupt, Stop):  # KeyboardInterrupt: a Ctrl-C before install()
        signals.armed = False
        say("stop requested")
    except SetupError as error:
        signals.armed = False
        say(f"error: {error}")
        if dead := sup.first_dead():
            report_death(dead)
        status = 1
    finally:
        signals.armed = False
        sup.stop_all()
    say("stopped")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
