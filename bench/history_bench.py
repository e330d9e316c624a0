"""Helpdesk history at scale: 1,000,000 jobs and 10,000,000 step results in PostgreSQL.

Creates its own database (kaiketsu_bench by default; never the dev or test database),
migrates it, fills it (COPY for jobs, INSERT ... SELECT for steps, indexes built after the
load), ANALYZEs, then times the real views through Django's test client and prints p50/p95
per page, filter and search, and the time to the first 10,000 rows of the CSV export.

    .venv/bin/python bench/history_bench.py                 # full size (fill ~5-10 min)
    .venv/bin/python bench/history_bench.py --jobs 100000   # smaller
    .venv/bin/python bench/history_bench.py --reuse         # measure an already filled database
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kaiketsu_bench"
FORBIDDEN_DBS = {"kaiketsu", "postgres", "template0", "template1"}
STEPS_PER_JOB = 10
BUDGET_MS = 150.0

PASTES = [
    "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出されたため、L2TP接続に失敗しました。",
    "The L2TP connection attempt failed because the security layer encountered a processing error during initial negotiations with the remote computer.",
    "エラー 809: リモート サーバーが応答しないため、お使いのコンピューターと VPN サーバーとの間のネットワーク接続を確立できませんでした。",
    "Error 809: The network connection between your computer and the VPN server could not be established because the remote server is not responding.",
    "エラー 691: ユーザー名またはパスワードがこのドメインで無効なため、リモート接続は拒否されました。",
    "Error 691: The remote connection was denied because the user name and password combination you provided is not recognized.",
    "エラー 812: 接続はリモート アクセス サーバーで構成されたポリシーにより禁止されました。",
    "Error 720: A connection to the remote computer could not be established. You might need to change the network settings for this connection.",
    "VPN がつながらない。朝から社内システムに入れません。",
    "vpn not connecting since windows update, error 13801 IKE authentication credentials are unacceptable",
    "Error 868: The remote connection was not made because the name of the remote access server did not resolve.",
    "エラー 868: リモート アクセス サーバーの名前が解決されなかったため、リモート接続できませんでした。",
    "The remote access connection manager service (RasMan) stopped, code 0x80072ee7",
    "Error 800: The remote connection was not made because the attempted VPN tunnels failed.",
]
JOB_ERRORS = [
    "{m}: WinRM connection timed out after 30 s (the machine is off or not on the network)",
    "{m}: Access is denied (0x80070005): the WinRM account was refused",
    "{m}: the worker stopped reporting; the job was interrupted",
    "{m}: the runner could not run the plan: PowerShell exited with code 1",
]
STEP_ERRORS = [
    "The RPC server is unavailable. (Exception from HRESULT: 0x800706BA)",
    "Get-Service : Cannot find any service with service name 'PolicyAgent'.",
    "Requested registry access is not allowed: HKLM\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
    "Get-VpnConnection : VPN connection 'Company VPN' was not found.",
    "操作はタイムアウトしました。",
    "Set-ItemProperty : Attempted to perform an unauthorized operation.",
    "The term 'Get-NetIPConfiguration' is not recognized as the name of a cmdlet.",
    "WS-Management service cannot process the request: quota exceeded",
]
STEP_KINDS = [
    "service_status",
    "registry_value",
    "vpn_connection",
    "dns_resolve",
    "tcp_port",
    "event_log",
    "service_status",
    "registry_value",
    "vpn_dial",
    "ipsec_policy",
]
PLACES = ["tokyo", "osaka", "nagoya", "fukuoka", "sapporo", "sendai", "kobe", "yokohama"]


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def recreate_database(url: str) -> None:
    import psycopg

    name = db_name(url)
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def step(label: str, start: float) -> float:
    now = time.monotonic()
    print(f"  {label:<44} {now - start:7.1f} s", flush=True)
    return now


def _secondary_indexes(cur) -> list[tuple[str, str]]:
    """(name, definition) of every index on the two big tables that no constraint owns."""
    cur.execute(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
           WHERE i.tablename IN ('diagnostics_job', 'diagnostics_stepresult')
             AND i.indexname NOT IN (SELECT conname FROM pg_constraint)"""
    )
    return cur.fetchall()


def fill(url: str, n_jobs: int, seed: int = 6) -> None:
    """Users, machines, articles, n_jobs jobs and STEPS_PER_JOB steps per job, fast."""
    import psycopg

    rng = random.Random(seed)
    n_users = max(50, n_jobs // 200)
    n_machines = max(30, n_jobs // 330)
    n_articles = 25
    now = datetime.now(UTC)
    t = time.monotonic()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET max_parallel_maintenance_workers = 2")
        indexes = _secondary_indexes(cur)
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')

        with cur.copy(
            "COPY auth_user (password, is_superuser, username, first_name, last_name, email,"
            " is_staff, is_active, date_joined) FROM STDIN"
        ) as copy:
            for u in range(n_users):
                copy.write_row(
                    (
                        "!",
                        False,
                        f"user{u:05d}",
                        "",
                        "",
                        f"user{u:05d}@example.jp",
                        False,
                        True,
                        now,
                    )
                )
        cur.execute(
            "INSERT INTO diagnostics_credential (name, username, password_encrypted, updated_at)"
            " VALUES ('bench', 'kaiketsu', 'not-a-real-token', now()) RETURNING id"
        )
        cred = cur.fetchone()[0]
        with cur.copy(
            "COPY diagnostics_machine (name, address, port, scheme, verify_tls, credential_id,"
            " created_at) FROM STDIN"
        ) as copy:
            for m in range(n_machines):
                prefix = "lt" if m % 3 else "pc"
                name = f"{prefix}-{PLACES[m % len(PLACES)]}-{m:05d}"
                copy.write_row(
                    (
                        name,
                        f"10.{m // 65536}.{m // 256 % 256}.{m % 256}",
                        5986,
                        "https",
                        True,
                        cred,
                        now,
                    )
                )
        with cur.copy(
            "COPY diagnostics_article (slug, status, error_codes, title_ja, title_en, summary_ja,"
            " summary_en, causes_ja, causes_en, steps_ja, steps_en, notes_ja, notes_en,"
            " manual_steps, sources, updated_at) FROM STDIN"
        ) as copy:
            for a in range(n_articles):
                copy.write_row(
                    (
                        f"vpn-article-{a:02d}",
                        "published",
                        "[]",
                        f"VPN 記事 {a}",
                        f"VPN article {a}",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "[]",
                        "[]",
                        now,
                    )
                )
        cur.execute("SELECT min(id) FROM auth_user")
        first_user = cur.fetchone()[0]
        cur.execute("SELECT min(id) FROM diagnostics_machine")
        first_machine = cur.fetchone()[0]
        cur.execute("SELECT min(id) FROM diagnostics_article")
        first_article = cur.fetchone()[0]
        t = step(f"{n_users:,} users, {n_machines:,} machines, {n_articles} articles", t)

        span = timedelta(days=730)
        start = now - span
        tick = span / n_jobs
        cols = (
            "user_id, machine_id, article_id, kind, status, outcome, pasted_text, match_score,"
            " fix_keys, restart, plan, note, error, language, step_errors, transcript, stderr,"
            " step_count, created_at, started_at, heartbeat_at, finished_at"
        )
        active_from = n_jobs - 10  # the newest ten are still running, each on its own machine
        with cur.copy(f"COPY diagnostics_job ({cols}) FROM STDIN") as copy:
            for i in range(n_jobs):
                u = int(n_users * rng.random() ** 2)  # a few users run many jobs
                m = u % n_machines if rng.random() < 0.9 else rng.randrange(n_machines)
                if i >= active_from:
                    m = (i - active_from) * (n_machines // 10)
                r = rng.random()
                kind = "diagnose" if r < 0.85 else "fix" if r < 0.97 else "rollback"
                r = rng.random()
                if i >= active_from:
                    status, outcome = "running", ""
                elif r < 0.90:
                    status = "done"
                    outcome = {
                        "diagnose": "problems" if rng.random() < 0.7 else "healthy",
                        "fix": "fixed" if rng.random() < 0.85 else "not_fixed",
                        "rollback": "rolled_back",
                    }[kind]
                elif r < 0.96:
                    status, outcome = "error", "error"
                elif r < 0.985:
                    status, outcome = "interrupted", "error"
                else:
                    status, outcome = "declined", ""
                machine_name = f"m{m}"
                created = start + tick * i + timedelta(seconds=rng.random())
                paste = ""
                if kind == "diagnose":
                    paste = rng.choice(PASTES)
                    if rng.random() < 0.3:
                        paste += f" ({created:%Y-%m-%d %H:%M})"
                error = ""
                if outcome == "error":
                    error = rng.choice(JOB_ERRORS).format(m=machine_name)
                finished = created + timedelta(seconds=20 + 40 * rng.random())
                copy.write_row(
                    (
                        first_user + u,
                        first_machine + m,
                        first_article + (u * 7 + i) % n_articles
                        if rng.random() < 0.5
                        else first_article + int(n_articles * rng.random() ** 3),
                        kind,
                        status,
                        outcome,
                        paste,
                        round(0.5 + rng.random() / 2, 3) if paste else None,
                        "[]",
                        "",
                        '{"version": 1, "steps": []}',
                        "",
                        error,
                        "ja" if i % 10 < 7 else "en",  # no rng draw: the same data as before
                        "",  # step_errors: gathered once the steps are in
                        "",
                        "",
                        STEPS_PER_JOB,
                        created,
                        created + timedelta(seconds=1),
                        finished,
                        None if status == "running" else finished,
                    )
                )
        t = step(f"{n_jobs:,} jobs (COPY)", t)

        errors = "ARRAY[" + ", ".join("'" + e.replace("'", "''") + "'" for e in STEP_ERRORS) + "]"
        kinds = "ARRAY[" + ", ".join(f"'{k}'" for k in STEP_KINDS) + "]"
        cur.execute("SET session_replication_role = replica")  # skip FK triggers for the load
        cur.execute("SELECT min(id), max(id) FROM diagnostics_job")
        lo, hi = cur.fetchone()
        chunk = 200_000
        for a in range(lo, hi + 1, chunk):
            cur.execute(
                f"""
                INSERT INTO diagnostics_stepresult (job_id, step_id, phase, position, kind,
                    facts, before, after, changed, verdict, error, duration_ms, created_at)
                SELECT j.id, 'c' || g, x.phase, g - 1, ({kinds})[g],
                    CASE WHEN x.phase = 'fix' THEN '{{}}'::jsonb
                         ELSE jsonb_build_object('status', CASE WHEN x.h < 80 THEN 'Stopped'
                                                 ELSE 'Running' END, 'value', x.h) END,
                    CASE WHEN x.phase = 'fix' THEN jsonb_build_object('Setting', x.h %% 3) END,
                    CASE WHEN x.phase = 'fix' THEN jsonb_build_object('Setting', 2) END,
                    CASE WHEN x.phase = 'fix' THEN x.h %% 3 <> 2 END,
                    CASE WHEN x.h < 80 AND x.phase <> 'fix' THEN 'fail'
                         WHEN x.h < 110 THEN 'error'
                         WHEN x.phase = 'fix' THEN 'done' ELSE 'pass' END,
                    CASE WHEN x.h >= 80 AND x.h < 110 THEN ({errors})[x.h %% 8 + 1] ELSE '' END,
                    x.h %% 900 + 5,
                    j.created_at + g * interval '2 seconds'
                FROM diagnostics_job j
                CROSS JOIN generate_series(1, {STEPS_PER_JOB}) g
                CROSS JOIN LATERAL (
                    SELECT (hashint8(j.id * 16 + g) & 1023) AS h,
                        CASE WHEN j.kind = 'diagnose' OR g <= 6 THEN 'check'
                             WHEN j.kind = 'rollback' THEN 'rollback'
                             WHEN g <= 8 THEN 'fix' ELSE 'verify' END AS phase
                ) x
                WHERE j.id >= %s AND j.id < %s
                """,
                [a, a + chunk],
            )
            # What Job.note_step_error keeps as steps arrive: each distinct error, one a line.
            cur.execute(
                """
                UPDATE diagnostics_job j SET step_errors = s.errors
                FROM (SELECT job_id, string_agg(DISTINCT error, E'\\n') AS errors
                      FROM diagnostics_stepresult
                      WHERE error <> '' AND job_id >= %s AND job_id < %s GROUP BY job_id) s
                WHERE j.id = s.job_id
                """,
                [a, a + chunk],
            )
            conn.commit()
            print(f"    steps for jobs {a - lo + chunk:>10,} / {hi - lo + 1:,}", flush=True)
        cur.execute("SET session_replication_role = DEFAULT")
        t = step(f"{n_jobs * STEPS_PER_JOB:,} step results (INSERT ... SELECT)", t)

        for name, definition in indexes:
            cur.execute(definition)
            conn.commit()
            t = step(f"index {name}", t)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) diagnostics_job")
        conn.execute("VACUUM (ANALYZE) diagnostics_stepresult")
        conn.execute("ANALYZE")
    step("VACUUM ANALYZE", t)


def timed(fn, runs: int) -> tuple[list[float], list[float]]:
    """Wall time of each call and the part of it spent in SQL, in ms."""
    from django.db import connection

    sql = [0.0]

    def clock(execute, *args):
        t = time.perf_counter()
        try:
            return execute(*args)
        finally:
            sql[0] += time.perf_counter() - t

    out, in_sql = [], []
    with connection.execute_wrapper(clock):
        for _ in range(runs):
            sql[0] = 0.0
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
            in_sql.append(sql[0] * 1000)
    return out, in_sql


def measure(runs: int) -> list[tuple[str, int, float, float, float, float]]:
    """Time each page, filter and search through the real views.

    (name, rows, p50, p95, max, p95 of the SQL part) in ms.
    """
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from diagnostics import history
    from diagnostics.models import Article, Job, Machine
    from diagnostics.roles import HELPDESK, ensure_groups

    user_model = get_user_model()
    staff, _ = user_model.objects.get_or_create(username="bench-helpdesk")
    staff.groups.add(ensure_groups()[HELPDESK])
    client = Client()
    client.force_login(staff)
    url = reverse("diagnostics:history")
    rng = random.Random(7)

    # Values to rotate through, so no scenario is one warm row over and over.
    users = list(
        user_model.objects.filter(username__startswith="user").values_list("username", flat=True)
    )
    machines = list(Machine.objects.values_list("name", flat=True))
    articles = list(Article.objects.values_list("slug", flat=True))
    total = Job.objects.count()
    middle = Job.objects.order_by("-created_at", "-id").values_list("created_at", "id")[total // 2]
    deep = history.encode_cursor(history.Cursor(*middle))
    last_year = datetime.now(UTC).date() - timedelta(days=365)

    scenarios: list[tuple[str, object]] = [
        ("first page", lambda: {}),
        (f"deep page (after job {total // 2:,})", lambda: {"after": deep}),
        ("user", lambda: {"user": rng.choice(users)}),
        ("user (busiest)", lambda: {"user": users[0]}),
        ("machine", lambda: {"machine": rng.choice(machines)}),
        ("article", lambda: {"article": rng.choice(articles)}),
        ("article, deep page", lambda: {"article": articles[-1], "after": deep}),
        ("status=error", lambda: {"status": "error"}),
        ("status=interrupted", lambda: {"status": "interrupted"}),
        ("status=running (10 rows)", lambda: {"status": "running"}),
        ("kind=fix", lambda: {"kind": "fix"}),
        ("kind=rollback", lambda: {"kind": "rollback"}),
        ("outcome=not_fixed", lambda: {"outcome": "not_fixed"}),
        (
            "dates: one week a year ago",
            lambda: {"date_from": str(last_year), "date_to": str(last_year + timedelta(days=6))},
        ),
        ("user + status=error", lambda: {"user": rng.choice(users[:200]), "status": "error"}),
        ("kind=rollback + status=declined", lambda: {"kind": "rollback", "status": "declined"}),
        ("search: common (L2TP)", lambda: {"q": "L2TP"}),
        ("search: Japanese (ネゴシエート)", lambda: {"q": "ネゴシエート"}),
        ("search: rare (0x80072ee7)", lambda: {"q": "0x80072ee7"}),
        ("search: machine name (osaka-00001)", lambda: {"q": "osaka-00001"}),
        ("search: step error (PolicyAgent)", lambda: {"q": "PolicyAgent"}),
        ("search: job error (access is denied)", lambda: {"q": "access is denied"}),
        ("search: no match (zzqx-nothing)", lambda: {"q": "zzqx-nothing"}),
        ("search + status=error", lambda: {"q": "timed out", "status": "error"}),
        ("search, deep page", lambda: {"q": "L2TP", "after": deep}),
    ]
    results = []
    for name, params in scenarios:
        rows = 0

        def get(params=params):
            nonlocal rows
            response = client.get(url, params())
            assert response.status_code == 200, response.status_code
            rows = response.content.count(b'<tr id="history-job-')

        get()  # warm-up: plan cache, buffers
        ms, sql = timed(get, runs)
        results.append((name, rows, *_stats(ms), _stats(sql)[1]))
        p50, p95 = results[-1][2:4]
        print(f"  {name:<42} {rows:>4} {p50:8.1f} {p95:8.1f} {results[-1][5]:8.1f}", flush=True)

    export = reverse("diagnostics:history-export")

    def first_10000():
        response = client.get(export)
        lines = 0
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            if lines > 10_000:
                break
        response.close()

    ms, sql = timed(first_10000, max(3, runs // 4))
    results.append(("CSV export: first 10,000 rows", 10_000, *_stats(ms), _stats(sql)[1]))
    return results


def _stats(ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95, ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40, help="timed requests per scenario")
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--reuse", action="store_true", help="skip the fill; measure only")
    args = parser.parse_args()

    name = db_name(args.db_url)
    if name in FORBIDDEN_DBS or name.startswith("test"):
        sys.exit(f"refusing to drop {name!r}: give the bench its own database")
    os.environ["DATABASE_URL"] = args.db_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # testserver host, test-only keys
    print(f"database {name}: {args.jobs:,} jobs, {args.jobs * STEPS_PER_JOB:,} step results")
    started = time.monotonic()
    if not args.reuse:
        recreate_database(args.db_url)

    import django
    from django.core.management import call_command

    django.setup()
    if not args.reuse:
        call_command("migrate", verbosity=0)
        fill(args.db_url, args.jobs)
        print(f"  fill total {time.monotonic() - started:.0f} s")

    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  database size {cur.fetchone()[0]}")
    print(f"\n  {'scenario':<42} {'rows':>4} {'p50 ms':>8} {'p95 ms':>8} {'sql p95':>8}")
    results = measure(args.runs)
    print(
        "\n| scenario | rows | p50 ms | p95 ms | max ms | SQL p95 ms |"
        "\n|---|---:|---:|---:|---:|---:|"
    )
    for scenario, rows, p50, p95, worst, sql95 in results:
        flag = "" if p95 < BUDGET_MS or scenario.startswith("CSV") else " **over**"
        print(
            f"| {scenario}{flag} | {rows:,} | {p50:.1f} | {p95:.1f} | {worst:.1f} | {sql95:.1f} |"
        )


if __name__ == "__main__":
    main()
