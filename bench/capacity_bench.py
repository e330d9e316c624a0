"""Many employees at once, and a fleet scan: does a waiting job hold a worker?

Run: ``.venv/bin/python bench/capacity_bench.py [--sizes 60,200] [--scan 500] [--threads 64]``

Builds its own world in a temporary directory and stops all of it at the end: a fresh
database (PostgreSQL database ``kaiketsu_bench`` when one answers on 127.0.0.1:5432, else
SQLite), the shipped KB, one employee and one machine per simulated host, winsim serving
copies of the demo profile's reachable hosts (its 200 ms per step), and Celery worker
process(es) started exactly as ``make run`` starts them (scripts/services.worker_argv), on
a thread pool of ``--threads``.

Diagnoses are started the way the "Diagnose" button starts them (workflows.diagnosis.
start_diagnosis, then the broker), all released by one barrier. Figures come from the
database: press -> first step = the first StepResult's time - the job's created_at; press ->
verdict = finished_at - created_at. Each size is compared with one job alone in the same run.
The fleet scan runs the seed article on ``--scan`` hosts through workflows.scan, then again
with one host that never answers added; peak RSS is sampled from /proc every 0.2 s for the
worker processes and their children.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.diagnose_bench import (  # noqa: E402
    BENCH_REDIS_DB,
    DEMO_PROFILE,
    ERROR_FAULTS,
    SEED_SLUG,
    Stop,
    _raise_stop,
    clear_live_streams,
    configure_environment,
    point_machines,
    prepare_database,
)
from scripts.services import (  # noqa: E402
    DEFAULT_REDIS_URL,
    Service,
    ensure_redis,
    port_answers,
    start_worker,
)
from scripts.services import start_winsim as services_start_winsim  # noqa: E402

PG_URL = "postgres://postgres@127.0.0.1:5432/kaiketsu_bench"


def fleet_profile(directory: Path, count: int, hung: bool) -> Path:
    """``count`` copies of the demo's reachable hosts (cycled), plus one hung host if asked."""
    demo = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    hosts = demo.get("hosts") or {}
    reachable = [
        n for n, h in hosts.items() if not any((h.get("faults") or {}).get(f) for f in ERROR_FAULTS)
    ]
    out = {}
    for i in range(count):
        template = reachable[i % len(reachable)]
        out[f"{template}-{i:04d}"] = {**hosts[template], "port": 0}
    if hung:
        out["demo-hang-9999"] = {**hosts["demo-hang"], "port": 0}
    demo["hosts"] = out
    path = directory / f"fleet-{count}{'-hung' if hung else ''}.yaml"
    path.write_text(yaml.safe_dump(demo, allow_unicode=True), encoding="utf-8")
    return path


def start_winsim(profile: Path, log_dir: Path) -> tuple[Service, dict[str, dict]]:
    """The fleet; its service and {host name: its --print-json line} (every line kept)."""
    return services_start_winsim(profile, os.environ.copy(), log_path=log_dir / "winsim.log")


def winrm_requests(hosts: dict[str, dict]) -> int:
    """HTTP requests the fleet's hosts have received so far, counted by winsim itself."""
    from winsim.server import requests_received

    total = 0
    for info in hosts.values():
        with contextlib.suppress(OSError):  # the hung host never answers, not even this
            total += requests_received(info["url"], timeout=2)
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def run_at_once(machine_ids: list[int]) -> dict:
    """Start one diagnosis per machine at the same moment; wait; figures in seconds."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from diagnostics import jobs
    from diagnostics.models import Article, Job, Machine
    from diagnostics.workflows.diagnosis import start_diagnosis

    user = get_user_model().objects.get(username="tanaka")
    article = Article.objects.get(slug=SEED_SLUG)
    machines = list(Machine.objects.filter(pk__in=machine_ids))
    # A few pressing threads, each a database connection, release all presses at one moment
    # (a press takes milliseconds); a connection per press would exhaust PostgreSQL's 100.
    pressers = min(len(machines), 16)
    barrier = threading.Barrier(pressers)
    started: list[int] = []
    lock = threading.Lock()

    def press(share: list) -> None:
        barrier.wait()
        for machine in share:
            job = start_diagnosis(user, machine, article, pasted_text="bench")
            jobs.enqueue(job.pk)  # autocommit: on_commit already fired; a duplicate is harmless
            with lock:
                started.append(job.pk)
        connection.close()

    threads = [
        threading.Thread(target=press, args=(machines[n::pressers],)) for n in range(pressers)
    ]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if not Job.objects.filter(pk__in=started).exclude(status__in=Job.TERMINAL).exists():
            break
        time.sleep(0.2)
    wall = time.monotonic() - began
    first, verdict, errors = [], [], 0
    for job in Job.objects.filter(pk__in=started).prefetch_related("steps"):
        steps = sorted(s.created_at for s in job.steps.all())
        if job.status != Job.Status.DONE:
            errors += 1
        if steps:
            first.append((steps[0] - job.created_at).total_seconds())
        if job.finished_at:
            verdict.append((job.finished_at - job.created_at).total_seconds())
    return {"n": len(started), "wall": wall, "first": first, "verdict": verdict, "errors": errors}


class RssSampler(threading.Thread):
    """Peak resident memory of some processes and their children, from /proc."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak, self.running = pids, 0, True

    @staticmethod
    def _tree(pid: int) -> list[int]:
        found = [pid]
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return found
        for child in children:
            found += RssSampler._tree(int(child))
        return found

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while self.running:
            total = sum(self._rss_kb(p) for pid in self.pids for p in self._tree(pid))
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def run_scan(workers: list[Service], pattern: str) -> dict:
    from django.contrib.auth import get_user_model

    from diagnostics.models import Article, Job
    from diagnostics.workflows import scan as scans

    user = get_user_model().objects.get(username="tanaka")
    article = Article.objects.get(slug=SEED_SLUG)
    selection = scans.Selection(name_pattern=pattern)
    sampler = RssSampler([w.pid for w in workers if w.pid])
    sampler.start()
    began = time.monotonic()
    scan = scans.start_scan(user, article, selection)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        scan.refresh_from_db()
        if scan.finished_at:
            break
        time.sleep(0.2)
    wall = time.monotonic() - began
    sampler.running = False
    summary = scans.summary(scan)
    hung = scan.jobs.filter(machine__name="demo-hang-9999").first()
    others = scan.jobs.exclude(machine__name="demo-hang-9999")
    last_other = max((j.finished_at for j in others if j.finished_at), default=None)
    return {
        "wall": wall,
        "rss_mb": sampler.peak / 1024,
        "summary": summary,
        "others_done_s": (last_other - scan.created_at).total_seconds() if last_other else None,
        "hung_s": (hung.finished_at - scan.created_at).total_seconds()
        if hung and hung.finished_at
        else None,
        "jobs": scan.jobs.count(),
        "errors": scan.jobs.filter(status=Job.Status.ERROR).count(),
    }


def database_url() -> str:
    if not port_answers("127.0.0.1", 5432):
        return ""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS kaiketsu_bench")
        db.execute("CREATE DATABASE kaiketsu_bench")
    return PG_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="60,200", help="diagnoses started at once, per pass")
    parser.add_argument("--scan", type=int, default=500, help="hosts in the fleet scan (0: none)")
    parser.add_argument("--threads", type=int, default=64, help="KAIKETSU_WORKER_THREADS")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--scan-concurrency", type=int, default=48)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stop)
    directory = Path(tempfile.mkdtemp(prefix="kaiketsu-capacity-"))
    services: list[Service] = []
    try:
        base = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        from urllib.parse import urlsplit

        wanted = urlsplit(base)._replace(path=f"/{BENCH_REDIS_DB}").geturl()
        redis_url, redis_service = ensure_redis(wanted, data_root=directory / "redis")
        if redis_service:
            services.append(redis_service)
        configure_environment(directory, redis_url)
        db_url = database_url()
        if db_url:
            os.environ["DATABASE_URL"] = db_url
        os.environ["KAIKETSU_WORKER_THREADS"] = str(args.threads)
        os.environ["KAIKETSU_SCAN_CONCURRENCY"] = str(args.scan_concurrency)
        clear_live_streams(redis_url)
        prepare_database(secrets.token_urlsafe(12))
        print(
            f"database: {os.environ['DATABASE_URL'].split('@')[-1]}; {args.workers} worker(s) x "
            f"{args.threads} threads; redis {redis_url}",
            flush=True,
        )
        hosts_needed = max([*sizes, args.scan, 1])
        profile = fleet_profile(directory, hosts_needed, hung=bool(args.scan))
        winsim, hosts = start_winsim(profile, directory)
        services.append(winsim)
        ids = point_machines(hosts)
        workers = []
        for n in range(args.workers):
            worker = start_worker(
                os.environ.copy(),
                name=f"worker{n}",
                log_path=directory / f"worker{n}.log",
                queue=os.environ["KAIKETSU_QUEUE"],
            )
            workers.append(worker)
            services.append(worker)
        ordered = [ids[name] for name in sorted(ids) if name != "demo-hang-9999"]
        alone = run_at_once(ordered[:1])
        run_at_once(ordered[1:2])  # warm the worker's connections once more
        alone = run_at_once(ordered[:1])
        print(
            f"\none job alone: first step {alone['first'][0]:.2f} s, verdict {alone['verdict'][0]:.2f} s"
        )
        print(
            "\n| diagnoses at once | wall for all | first step p50 / p95 | verdict p50 / p95 | ratio to one alone | errors |"
        )
        print("|---|---|---|---|---|---|")
        for size in sizes:
            r = run_at_once(ordered[:size])
            ratio = r["wall"] / alone["verdict"][0]
            print(
                f"| {size} | {r['wall']:.1f} s | {statistics.median(r['first']):.2f} / {pct(r['first'], 95):.2f} s | "
                f"{statistics.median(r['verdict']):.2f} / {pct(r['verdict'], 95):.2f} s | {ratio:.1f}x | {r['errors']} |",
                flush=True,
            )
        if args.scan:
            print(
                "\n| fleet scan | wall | done / total | healthy / problems / could not run | peak RSS of workers | WinRM requests | last healthy host done | hung host ended |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for label, pattern in (
                (f"{args.scan} hosts", "demo-*-0*"),  # every copy, not the hung host
                (f"{args.scan} hosts + 1 hung", "demo-*"),
            ):
                before = winrm_requests(hosts)
                r = run_scan(workers, pattern)
                sent = winrm_requests(hosts) - before
                s = r["summary"]
                hung = f"{r['hung_s']:.1f} s" if r["hung_s"] else "-"
                print(
                    f"| {label} | {r['wall']:.1f} s | {s.done} / {s.total} | "
                    f"{s.healthy} / {s.problems} / {s.unreachable} | {r['rss_mb']:.0f} MiB | {sent:,} | "
                    f"{r['others_done_s']:.1f} s | {hung} |",
                    flush=True,
                )
    except (KeyboardInterrupt, Stop):
        print("\nstopped; cleaning up", file=sys.stderr)
        return 130
    finally:
        for service in reversed(services):
            service.stop(timeout=10)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
