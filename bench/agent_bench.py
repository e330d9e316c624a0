"""Figures for the agent channel (issue #14), against a running demo (``make run``).

Run, while ``make run`` runs in another terminal:
``.venv/bin/python bench/agent_bench.py latency [--runs 5]`` and
``.venv/bin/python bench/agent_bench.py polls --url http://127.0.0.1:8000 [--agents 250,1000,2000]``.

``latency``: press -> first step, through the same path as the browser's Diagnose button
(``start_diagnosis`` + enqueue, the demo's worker), alternately on ``demo-at-home`` (its winsim
agent long-polls the web) and ``demo-nat-t`` (WinRM): the time from the job's row to its first
step row, both written by the portal's clock. The demo sleeps 200 ms before each step on both.

``polls``: how many agents one web process holds. It enrols N extra machines in the demo's
database (credentials made as enrolment makes them), opens N long polls over raw sockets (all
at once, or spread over ``--ramp`` seconds as a real fleet's polls are), and while they are held asks the login page 20 times. It prints how many polls were
held to the end (answered 204 after the poll time, not refused or dropped), the web process'
memory (VmRSS of the process listening on the port) and the page's latency under that load.
The extra machines are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _django() -> None:
    from portal.envfiles import read_env_files

    read_env_files()  # var/demo.env ($KAIKETSU_DEMO_ENV), as manage.py in a second terminal
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()


def latency(runs: int) -> None:
    _django()
    from django.contrib.auth import get_user_model

    from diagnostics import jobs
    from diagnostics.models import Article, Job, Machine
    from diagnostics.workflows.diagnosis import start_diagnosis

    user = get_user_model().objects.get(username="tanaka")
    article = Article.objects.get(slug="l2tp-ipsec-psk-negotiation")
    figures: dict[str, list[float]] = {"demo-at-home": [], "demo-nat-t": []}
    for _ in range(runs):
        for name, found in figures.items():
            machine = Machine.objects.get(name=name)
            job = start_diagnosis(user, machine, article, pasted_text="bench")
            jobs.enqueue(job.pk)
            deadline = time.monotonic() + 60
            first = None
            while first is None and time.monotonic() < deadline:
                first = job.steps.order_by("created_at").first()
                time.sleep(0.02)
            while not Job.objects.get(pk=job.pk).is_finished and time.monotonic() < deadline:
                time.sleep(0.1)
            if first is None:
                print(f"{name}: no step within 60 s ({Job.objects.get(pk=job.pk).error})")
                continue
            found.append((first.created_at - job.created_at).total_seconds() * 1000)
    print("| channel | host | runs | press -> first step p50 | max |")
    print("|---|---|---:|---:|---:|")
    for name, values in figures.items():
        if values:
            channel = "agent (long poll)" if name == "demo-at-home" else "WinRM"
            print(
                f"| {channel} | {name} | {len(values)} | {statistics.median(values):,.0f} ms "
                f"| {max(values):,.0f} ms |"
            )


def _web_pid(port: int) -> int | None:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    marker = "pid="
    if marker not in out.stdout:
        return None
    return int(out.stdout.split(marker, 1)[1].split(",", 1)[0])


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _poll(host: str, port: int, credential: str) -> int | str:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect: {exc.errno}"
    request = (
        f"GET /agent/v1/work?boot=bench&version=bench HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {credential}\r\nConnection: close\r\n\r\n"
    )
    try:
        writer.write(request.encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=120)
        return int(status.split()[1]) if status else "dropped"
    except (OSError, TimeoutError, IndexError, ValueError) as exc:
        return f"error: {type(exc).__name__}"
    finally:
        writer.close()


async def _page(host: str, port: int) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /login/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    await reader.read()
    writer.close()
    return (time.monotonic() - started) * 1000


async def _hold(
    host: str, port: int, credentials: list[str], ramp: float
) -> tuple[list, list[float], float]:
    async def later(n: int, credential: str) -> int | str:
        await asyncio.sleep(ramp * n / len(credentials))  # arrivals spread over ``ramp`` s
        return await _poll(host, port, credential)

    polls = [asyncio.create_task(later(n, c)) for n, c in enumerate(credentials)]
    await asyncio.sleep(ramp + 3)  # every poll is in and held (ramp < the poll time)
    rss = _rss_mb(_web_pid(port))
    pages = [await _page(host, port) for _ in range(20)]
    return list(await asyncio.gather(*polls)), pages, rss


def polls(url: str, counts: list[int], ramp: float) -> None:
    _django()
    import secrets

    from django.conf import settings

    from diagnostics import agents
    from diagnostics.models import Credential, Machine

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    cred, _ = Credential.objects.get_or_create(
        name="bench-agents", defaults={"username": "-", "password_encrypted": "-"}
    )
    print(f"poll held for {settings.KAIKETSU_AGENT_POLL_SECONDS} s by the web (settings)")
    print(
        "| agents polling at once | held to the end (204) | other answers | web RSS | /login/ p50 | p95 |"
    )
    print("|---:|---:|---|---:|---:|---:|")
    try:
        for count in counts:
            credentials = []
            for n in range(count):
                secret = secrets.token_urlsafe(32)
                machine, _ = Machine.objects.update_or_create(
                    name=f"bench-agent-{n}",
                    defaults={
                        "address": "-",
                        "credential": cred,
                        "channel": Machine.Channel.AGENT,
                        "agent_key_hash": agents.digest(secret),
                    },
                )
                credentials.append(f"{machine.pk}.{secret}")
            answers, pages, rss = asyncio.run(_hold(host, port, credentials, ramp))
            held = sum(1 for a in answers if a == 204)
            others: dict[str, int] = {}
            for a in answers:
                if a != 204:
                    others[str(a)] = others.get(str(a), 0) + 1
            pages.sort()
            print(
                f"| {count:,} | {held:,} | {others or '-'} | {rss:,.0f} MB "
                f"| {statistics.median(pages):,.0f} ms | {pages[int(len(pages) * 0.95) - 1]:,.0f} ms |"
            )
    finally:
        Machine.objects.filter(name__startswith="bench-agent-").delete()
        cred.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--runs", type=int, default=5)
    pol = sub.add_parser("polls")
    pol.add_argument("--url", default="http://127.0.0.1:8000")
    pol.add_argument("--agents", default="250,1000,2000")
    pol.add_argument(
        "--ramp", type=float, default=0, help="spread the polls' arrivals over this many seconds"
    )
    args = parser.parse_args()
    if args.what == "latency":
        latency(args.runs)
    else:
        polls(args.url, [int(n) for n in args.agents.split(",")], args.ramp)


if __name__ == "__main__":
    main()
