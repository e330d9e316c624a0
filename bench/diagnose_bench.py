"""Figures for a diagnosis in the browser: press Diagnose -> first step on screen -> verdict, in Chromium.

Run: ``.venv/bin/python bench/diagnose_bench.py [--runs 3] [--screenshot docs/screenshot.png]``.

The script builds its own world in a temporary directory and stops all of it at the end (also
on Ctrl-C or SIGTERM): a fresh SQLite database (migrated, the shipped KB loaded, one employee
owning one machine per demo host), the winsim demo fleet on free ports, a Celery worker on its
own queue, uvicorn serving the portal (ASGI, SSE), and Debian's Chromium driven by Playwright.
Redis is reused if one answers at $REDIS_URL (else a private one is started), always on the
bench's own database number so no other install's keys or queue are touched.

For every reachable demo host and every run the browser opens the seed article with the
machine selected, presses Diagnose, and records in the page (performance.timeOrigin + now(),
one clock across the navigation) the click, the moment the first ``tr.step`` leaves
"pending", and the moment ``#job-verdict h2`` is in the page. Hosts whose profile makes them
refuse or never answer are timed separately: click to the error verdict. WinRM HTTP requests
per job: ``diagnostics.remote.run_plan`` called directly with the seed article's plan, its
requests counted where they arrive (winsim's ``requests_received``).

The demo profile sleeps ``step_latency_ms`` (200 ms) before each step so the live view visibly
streams; a second pass with 0 ms shows the portal's own overhead.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import services  # noqa: E402
from scripts.services import DEFAULT_REDIS_URL, Service, ensure_redis, wait_until  # noqa: E402

DEMO_PROFILE = ROOT / "winsim" / "profiles" / "demo.yaml"
SEED_SLUG = "l2tp-ipsec-psk-negotiation"
SCREENSHOT_HOST = "demo-policyagent-stopped"
BENCH_REDIS_DB = 11  # tests use 9, `make run` 0: the bench's keys and queue stay apart
USERNAME = "tanaka"
# Hosts whose fault means no step can ever run: timed to their error verdict, not to a step.
ERROR_FAULTS = ("refuse_connections", "never_answer")
VERDICT_TIMEOUT_MS = 60_000

# Installed in every document before its own scripts: the click is stored in sessionStorage
# (it survives the POST and redirect), the job page's marks in window.__bench.
MEASURE_JS = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  document.addEventListener('click', (event) => {
    if (event.target.closest && event.target.closest('#diagnose')) {
      sessionStorage.setItem('bench.click', String(now()));
    }
  }, true);
  const marks = window.__bench = {page: null, first: null, verdict: null};
  const check = () => {
    if (marks.page === null && document.querySelector('#job-steps')) marks.page = now();
    if (marks.first === null &&
        document.querySelector('tr.step:not([data-verdict="pending"])')) marks.first = now();
    if (marks.verdict === null && document.querySelector('#job-verdict h2')) {
      marks.verdict = now();
    }
  };
  new MutationObserver(check).observe(document, {
    childList: true, subtree: true, attributes: true, attributeFilter: ['data-verdict'],
  });
})();
"""


class Stop(Exception):
    """SIGTERM, turned into an exception so the finally blocks stop what was started."""


@dataclass
class Run:
    """One press of Diagnose: milliseconds from the click (None when it never happened)."""

    page_ms: float | None  # the job page's step table parsed: POST, redirect, render
    first_ms: float | None
    verdict_ms: float | None
    status: str
    outcome: str


@dataclass
class HostFigures:
    """Every run on one host plus its WinRM request count for one job."""

    name: str
    runs: list[Run] = field(default_factory=list)
    requests: int | None = None
    direct_ms: float | None = None


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (with 3 runs p95 is the slowest run)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.median(values), percentile(values, 95)


def _values(runs: list[Run], attr: str) -> list[float]:
    return [v for r in runs if (v := getattr(r, attr)) is not None]


def timing_table(figures: list[HostFigures]) -> list[str]:
    """Rows: host, runs, median page, median/p95 first step and verdict (ms), requests."""
    head = f"{'host':<26} {'n':>2} {'page':>6} {'first med':>9} {'first p95':>9} "
    head += f"{'verdict med':>11} {'verdict p95':>11} {'requests':>8} {'winrm':>6}  outcome"
    lines = [head, "-" * len(head)]
    for host in figures:
        outcomes = sorted({f"{r.status}/{r.outcome}" for r in host.runs})
        lines.append(_row(host.name, host.runs, host.requests, host.direct_ms, outcomes))
    requests = [h.requests for h in figures if h.requests is not None]
    median_requests = int(statistics.median(requests)) if requests else None
    direct, _ = _stats([h.direct_ms for h in figures if h.direct_ms is not None])
    every_run = [r for h in figures for r in h.runs]
    lines.append("-" * len(head))
    lines.append(_row("all hosts", every_run, median_requests, direct, []))
    return lines


def _row(
    name: str, runs: list[Run], requests: int | None, direct_ms: float | None, outcomes: list[str]
) -> str:
    page_med, _ = _stats(_values(runs, "page_ms"))
    first_med, first_p95 = _stats(_values(runs, "first_ms"))
    verdict_med, verdict_p95 = _stats(_values(runs, "verdict_ms"))
    return (
        f"{name:<26} {len(runs):>2} {_fmt(page_med):>6} {_fmt(first_med):>9} "
        f"{_fmt(first_p95):>9} {_fmt(verdict_med):>11} {_fmt(verdict_p95):>11} "
        f"{_fmt(requests):>8} {_fmt(direct_ms):>6}  " + ", ".join(outcomes)
    )


def error_table(figures: list[HostFigures]) -> list[str]:
    """Rows for hosts that cannot run a step: click to the error verdict, per run."""
    lines = []
    for host in figures:
        times = ", ".join(_fmt(r.verdict_ms) for r in host.runs)
        outcomes = sorted({r.status for r in host.runs})
        lines.append(f"{host.name:<26} {times:>14} ms  {', '.join(outcomes)}")
    return lines


# --------------------------------------------------------------------------------------------
# The world: profile, winsim, database, worker, web server
# --------------------------------------------------------------------------------------------


def write_profile(directory: Path, latency_ms: int) -> tuple[Path, list[str], list[str]]:
    """The demo profile on free ports (port 0) with the given step latency.

    Returns (path, reachable host names, host names that can only end in an error).
    """
    profile = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    profile.setdefault("defaults", {})["step_latency_ms"] = latency_ms
    reachable, failing = [], []
    for name, host in (profile.get("hosts") or {}).items():
        host["port"] = 0
        faults = host.get("faults") or {}
        (failing if any(faults.get(f) for f in ERROR_FAULTS) else reachable).append(name)
    path = directory / f"fleet-{latency_ms}ms.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    return path, reachable, failing


def start_winsim(profile: Path, log_dir: Path) -> tuple[Service, dict[str, dict]]:
    """Start the fleet; return the service and {host name: its --print-json line}."""
    log_path = log_dir / f"{profile.stem}.log"
    return services.start_winsim(profile, os.environ.copy(), log_path=log_path)


def configure_environment(directory: Path, redis_url: str) -> None:
    """Settings for this process and every child: production-like (DEBUG off), own keys."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        FIELD_ENCRYPTION_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SESSION_COOKIE_SECURE="false",  # plain http on loopback
        CSRF_COOKIE_SECURE="false",
        SECURE_SSL_REDIRECT="false",
        DATABASE_URL=f"sqlite:///{directory / 'bench.sqlite3'}",
        REDIS_URL=redis_url,
        KAIKETSU_QUEUE=f"kaiketsu-bench-{uuid.uuid4().hex[:8]}",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        # Playwright's sync API runs an event loop in this thread; the ORM calls are plain
        # blocking calls of a script, not of an async view.
        DJANGO_ALLOW_ASYNC_UNSAFE="true",
    )


def prepare_database(password: str) -> None:
    """Migrate the fresh database, load the shipped KB, create the employee."""
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("load_kb", verbosity=0)
    user = get_user_model().objects.create_user(USERNAME, password=password)
    from diagnostics.roles import EMPLOYEE, ensure_groups

    user.groups.add(ensure_groups()[EMPLOYEE])


def point_machines(hosts: dict[str, dict]) -> dict[str, int]:
    """Create or re-point one machine per host (owned by the employee); {name: machine pk}."""
    from django.contrib.auth import get_user_model

    from diagnostics.models import Credential, Machine

    owner = get_user_model().objects.get(username=USERNAME)
    ids = {}
    for name, info in hosts.items():
        cred, _ = Credential.objects.get_or_create(
            name=f"{name}-winrm", defaults={"username": info["username"]}
        )
        cred.username = info["username"]
        cred.set_password(info["password"])
        cred.address_pattern, cred.allow_unverified = "127.0.0.1", True  # the winsim lab
        cred.save()
        scheme, rest = info["url"].split("://", 1)
        port = int(rest.split("/", 1)[0].rsplit(":", 1)[1])
        machine, _ = Machine.objects.update_or_create(
            name=name,
            defaults={
                "address": "127.0.0.1",
                "port": port,
                "scheme": scheme,
                "verify_tls": False,  # winsim's HTTPS hosts use a self-signed certificate
                "credential": cred,
            },
        )
        machine.owners.add(owner)
        ids[name] = machine.pk
    return ids


def clear_live_streams(redis_url: str) -> None:
    """Drop job streams a previous bench left in our Redis database (job ids start at 1 again)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        prefix = os.environ.get("KAIKETSU_REDIS_PREFIX", "kaiketsu")
        for key in client.scan_iter(f"{prefix}:job:*"):
            client.delete(key)
    finally:
        client.close()


def start_worker(log_dir: Path) -> Service:
    """A Celery worker (one thread: jobs here run one at a time) on the bench queue."""
    return services.start_worker(
        os.environ.copy(),
        log_path=log_dir / "worker.log",
        queue=os.environ["KAIKETSU_QUEUE"],
        concurrency=1,
    )


def start_web(log_dir: Path) -> tuple[Service, str]:
    """uvicorn serving portal.asgi (WhiteNoise serves static files) on a free port."""
    env = os.environ.copy()
    return services.start_web(env, log_path=log_dir / "web.log", access_log=False)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def log_in(context: Any, base_url: str, password: str) -> None:
    """Log the context's browser in once; every page of the context shares the session."""
    page = context.new_page()
    page.goto(base_url + "/login/")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    page.wait_for_url(base_url + "/")
    page.close()


def last_job(machine_id: int) -> str:
    """The machine's newest job as one line (status, outcome, error): why a run failed."""
    from diagnostics.models import Job

    job = Job.objects.filter(machine_id=machine_id).order_by("-pk").first()
    if job is None:
        return "no job was created"
    return f"job #{job.pk} {job.status}/{job.outcome or '-'} {job.error[:160]!r}"


def wait_until_idle(machine_id: int, timeout: float = 60) -> bool:
    """Wait until the machine has no active job (the per-machine lock refuses a second one)."""
    from diagnostics.models import Job

    active = Job.objects.filter(machine_id=machine_id, status__in=Job.ACTIVE)
    return wait_until(lambda: not active.exists(), timeout, interval=0.2)


def diagnose_once(context: Any, base_url: str, machine_id: int, keep_open: bool = False) -> Any:
    """Press Diagnose on the seed article for one machine; return (Run, page if kept open).

    A run that never reaches a verdict is returned with status "timeout" (or "not started"
    when the portal refused the job) and no times, so the bench reports it and goes on.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    wait_until_idle(machine_id)
    page = context.new_page()
    trouble: list[str] = []  # what the browser saw go wrong, for a run without a verdict
    page.on("pageerror", lambda exc: trouble.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: trouble.append(f"failed: {req.url} {req.failure}"))
    page.on(
        "response",
        lambda resp: (
            trouble.append(f"HTTP {resp.status}: {resp.url}") if resp.status >= 500 else None
        ),
    )
    try:
        page.goto(f"{base_url}/articles/{SEED_SLUG}/?machine={machine_id}")
        page.click("#diagnose")
        try:
            page.wait_for_url(re.compile(r"/jobs/\d+/$"), timeout=30_000)
        except PlaywrightTimeout:
            flash = page.locator(".messages, .flash").all_inner_texts()
            page.close()
            return Run(None, None, None, "not started", " ".join(flash)[:160]), None
        try:
            page.wait_for_function(
                "() => window.__bench && window.__bench.verdict !== null",
                timeout=VERDICT_TIMEOUT_MS,
            )
        except PlaywrightTimeout:
            page.close()
            why = "; ".join([last_job(machine_id), *trouble[:3]])
            return Run(None, None, None, "timeout", why), None
        marks = page.evaluate(
            """() => ({click: Number(sessionStorage.getItem('bench.click')),
                       page: window.__bench.page, first: window.__bench.first,
                       verdict: window.__bench.verdict})"""
        )
        box = page.locator("#job-verdict")
        run = Run(
            page_ms=None if marks["page"] is None else marks["page"] - marks["click"],
            first_ms=None if marks["first"] is None else marks["first"] - marks["click"],
            verdict_ms=marks["verdict"] - marks["click"],
            status=box.get_attribute("data-status") or "?",
            outcome=box.get_attribute("data-outcome") or "",
        )
    except BaseException:
        page.close()
        raise
    if keep_open:
        return run, page
    page.close()
    return run, None


def count_requests(
    machine_ids: dict[str, int], hosts: dict[str, dict], names: list[str]
) -> dict[str, tuple[int, float]]:
    """WinRM HTTP requests of one seed-article job per host, as winsim received them (the
    final Delete included), and the job's seconds: {name: (requests, seconds)}."""
    from diagnostics import jobs, remote
    from diagnostics.models import Article, Machine
    from diagnostics.plans import PlanStep, build_plan
    from winsim.server import requests_received

    article = Article.objects.get(slug=SEED_SLUG)
    steps = [
        PlanStep(f"c{i}", check.kind, check.args)
        for i, check in enumerate(article.checks.order_by("position", "id"), start=1)
    ]
    plan, _ = build_plan("bench", steps)
    counts = {}
    for name in names:
        target = jobs.target_for(
            Machine.objects.select_related("credential").get(pk=machine_ids[name])
        )
        lines: list[dict[str, Any]] = []
        before = requests_received(hosts[name]["url"])
        started = time.monotonic()
        remote.run_plan(target, plan, lines.append, deadline_s=60)
        seconds = time.monotonic() - started
        counts[name] = (requests_received(hosts[name]["url"]) - before, seconds)
    return counts


def measure_pass(
    context: Any,
    base_url: str,
    machine_ids: dict[str, int],
    hosts: dict[str, dict],
    reachable: list[str],
    failing: list[str],
    runs: int,
    error_runs: int,
) -> tuple[list[HostFigures], list[HostFigures]]:
    """All runs of one pass (hosts interleaved per round, so load drift hits every host)."""
    timed = {name: HostFigures(name) for name in reachable}
    errors = {name: HostFigures(name) for name in failing if error_runs}
    if reachable and runs:
        # Not counted: the first job pays for cold caches (templates, imports in the pool child).
        warm, _ = diagnose_once(context, base_url, machine_ids[reachable[0]])
        print(f"  warm-up on {reachable[0]}: verdict {_fmt(warm.verdict_ms)} ms", flush=True)
    for round_no in range(runs):
        for name in reachable:
            run, _ = diagnose_once(context, base_url, machine_ids[name])
            timed[name].runs.append(run)
            print(
                f"  round {round_no + 1}: {name:<26} page {_fmt(run.page_ms):>5} ms, "
                f"first {_fmt(run.first_ms):>5} ms, "
                f"verdict {_fmt(run.verdict_ms):>6} ms  {run.status}/{run.outcome}",
                flush=True,
            )
    for _ in range(error_runs):
        for name in errors:
            run, _ = diagnose_once(context, base_url, machine_ids[name])
            errors[name].runs.append(run)
            print(
                f"  {name:<26} error verdict after {_fmt(run.verdict_ms)} ms ({run.status})",
                flush=True,
            )
    for name, (count, seconds) in count_requests(machine_ids, hosts, reachable).items():
        timed[name].requests = count
        timed[name].direct_ms = seconds * 1000
    return list(timed.values()), list(errors.values())


def take_screenshot(context: Any, base_url: str, machine_id: int, path: Path) -> None:
    """A finished diagnosis of SCREENSHOT_HOST, 1100 px wide down to the verdict, Japanese UI."""
    run, page = diagnose_once(context, base_url, machine_id, keep_open=True)
    try:
        page.wait_for_selector("#job-verdict h2", state="visible")
        page.wait_for_timeout(300)  # let htmx finish settling the last swap
        path.parent.mkdir(parents=True, exist_ok=True)
        # The page is taller than the viewport: keep everything down to the verdict's causes.
        body = page.locator("#job-body").bounding_box()
        height = math.ceil(body["y"] + body["height"] + 24) if body else 900
        clip = {"x": 0, "y": 0, "width": 1100, "height": height}
        page.screenshot(path=str(path), full_page=True, clip=clip)
    finally:
        page.close()
    print(f"screenshot of {SCREENSHOT_HOST} ({run.status}/{run.outcome}) written to {path}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def print_pass(title: str, timed: list[HostFigures], errors: list[HostFigures]) -> None:
    """The tables of one pass."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n== {title} == (load average now {load} on {os.cpu_count()} CPUs)")
    print("milliseconds from the click on Diagnose (browser clock): page = job page parsed,")
    print("first = first step row no longer pending, verdict = #job-verdict h2 in the page;")
    print("p95 is nearest-rank (with 3 runs per host: the slowest). requests = WinRM HTTP requests")
    print("of one seed-article job (14 checks) as winsim received them (the final shell Delete")
    print("included); winrm = that job's run_plan")
    print("alone, in ms, called directly from this process (no Celery, database or browser).")
    print("\n".join(timing_table(timed)))
    if errors:
        print("\nhosts that cannot run a step: click -> error verdict (ms, per run)")
        print("\n".join(error_table(errors)))


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per reachable host and pass")
    parser.add_argument(
        "--error-runs", type=int, default=1, help="runs per unreachable/hanging host (pass 1)"
    )
    parser.add_argument(
        "--zero-latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a second pass with winsim's step_latency_ms set to 0",
    )
    parser.add_argument("--screenshot", type=Path, help="write a finished diagnosis PNG here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, database)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the world, measure, print; stop everything started, whatever happens."""
    args = parse_args(argv)
    # Set both: a shell starts background jobs with SIGINT ignored, and `kill -INT` must still
    # reach the finally block that stops the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stop)
    directory = Path(tempfile.mkdtemp(prefix="kaiketsu-bench-"))
    started: list[Service] = []
    password = secrets.token_urlsafe(12)
    try:
        base = urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
        wanted = base._replace(path=f"/{BENCH_REDIS_DB}").geturl()  # its own database number
        redis_url, redis_service = ensure_redis(wanted, data_root=directory / "redis")
        if redis_service:
            started.append(redis_service)
        configure_environment(directory, redis_url)
        clear_live_streams(redis_url)
        prepare_database(password)
        started.append(start_worker(directory))
        web, base_url = start_web(directory)
        started.append(web)
        print(f"bench world in {directory}: redis {redis_url}, portal {base_url}", flush=True)
        run_passes(args, directory, started, base_url, password)
    except (KeyboardInterrupt, Stop):
        print("\nstopped; cleaning up", file=sys.stderr)
        return 130
    finally:
        for service in reversed(started):
            service.stop(timeout=10)
        if args.keep:
            print(f"kept {directory}")
        else:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    return 0


def run_passes(
    args: argparse.Namespace,
    directory: Path,
    started: list[Service],
    base_url: str,
    password: str,
) -> None:
    """Pass 1 at the demo's latency (and the screenshot), pass 2 at 0 ms; winsim per pass."""
    from playwright.sync_api import sync_playwright

    demo = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    demo_latency = int((demo.get("defaults") or {}).get("step_latency_ms", 0))
    latencies = [demo_latency] + ([0] if args.zero_latency and demo_latency else [])
    with sync_playwright() as pw:
        browser = services.launch_chromium(pw)
        try:
            context = browser.new_context(locale="ja-JP", viewport={"width": 1100, "height": 900})
            context.add_init_script(MEASURE_JS)
            log_in(context, base_url, password)
            for index, latency in enumerate(latencies):
                profile, reachable, failing = write_profile(directory, latency)
                winsim, hosts = start_winsim(profile, directory)
                started.append(winsim)
                try:
                    machine_ids = point_machines(hosts)
                    print(f"\npass {index + 1}: step_latency_ms {latency}", flush=True)
                    error_runs = args.error_runs if index == 0 else 0
                    timed, errors = measure_pass(
                        context,
                        base_url,
                        machine_ids,
                        hosts,
                        reachable,
                        failing,
                        args.runs,
                        error_runs,
                    )
                    if index == 0 and args.screenshot:
                        take_screenshot(
                            context, base_url, machine_ids[SCREENSHOT_HOST], args.screenshot
                        )
                finally:
                    winsim.stop(timeout=10)
                    started.remove(winsim)
                print_pass(f"step_latency_ms {latency}", timed, errors)
        finally:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
