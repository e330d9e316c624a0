"""Figures for the helpdesk dashboard: each aggregate and the whole page at scale.

Run (PostgreSQL; the database is created if missing and filled once, then reused):
    .venv/bin/python bench/dashboard_bench.py \
        --database-url postgres:///kaiketsu_dashboard_bench --jobs 1000000 --steps 10

Fills with SQL (generate_series), not the ORM, so a million jobs take seconds to minutes:
200 users, 2,000 machines, 30 articles with 5 checks each, ``--jobs`` jobs spread evenly
over two years (so ~41,000 in the dashboard's 30-day window), ``--steps`` step results per
job. Prints p50/p95 of each dashboard query and of GET /console/ (rendered, as a superuser).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILL_SQL = """
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
SELECT '!', false, 'bench-user-' || i, '', '', 'bench' || i || '@example.co.jp', false, true, now()
FROM generate_series(1, 200) i;

INSERT INTO diagnostics_credential (name, username, password_encrypted, updated_at)
VALUES ('bench-cred', 'kaiketsu', 'x', now());

INSERT INTO diagnostics_machine (name, address, port, scheme, verify_tls, credential_id, created_at)
SELECT 'PC-BENCH' || lpad(i::text, 5, '0'), '10.0.' || (i / 250) || '.' || (i % 250), 5986,
       'https', true, (SELECT id FROM diagnostics_credential WHERE name = 'bench-cred'), now()
FROM generate_series(1, 2000) i;

INSERT INTO diagnostics_article (slug, status, error_codes, title_ja, title_en, summary_ja,
    summary_en, causes_ja, causes_en, steps_ja, steps_en, notes_ja, notes_en, manual_steps,
    sources, updated_at)
SELECT 'bench-article-' || i, 'published', '[]', '記事 ' || i, 'Article ' || i, '', '', '', '',
       '', '', '', '', '[]', '[]', now()
FROM generate_series(1, 30) i;

INSERT INTO diagnostics_check (article_id, key, position, title_ja, title_en, kind, args, expect,
                               explanation_ja, explanation_en)
SELECT a.id, 'chk' || k, k, '確認 ' || k, 'Check ' || k, 'service_status', '{}', '[]', '', ''
FROM diagnostics_article a, generate_series(1, 5) k WHERE a.slug LIKE 'bench-article-%%';
"""

JOBS_SQL = """
WITH u AS (SELECT array_agg(id) ids FROM auth_user WHERE username LIKE 'bench-user-%%'),
     m AS (SELECT array_agg(id) ids FROM diagnostics_machine WHERE name LIKE 'PC-BENCH%%'),
     a AS (SELECT array_agg(id) ids FROM diagnostics_article WHERE slug LIKE 'bench-article-%%')
INSERT INTO diagnostics_job (user_id, machine_id, article_id, kind, status, outcome, pasted_text,
    match_score, fix_keys, restart, plan, note, error, language, step_errors, transcript, stderr,
    step_count, created_at, finished_at)
SELECT u.ids[1 + i %% 200], m.ids[1 + (i * 7) %% 2000], a.ids[1 + (i * 13) %% 30],
       CASE WHEN i %% 4 = 0 THEN 'fix' ELSE 'diagnose' END, 'done',
       CASE WHEN i %% 4 = 0 THEN (ARRAY['fixed', 'not_fixed', 'error'])[1 + i %% 3]
            ELSE (ARRAY['healthy', 'problems', 'error', 'healthy', 'problems'])[1 + i %% 5] END,
       'VPN error ' || (i %% 500) || ' on the home network',
       CASE WHEN i %% 10 = 0 THEN NULL ELSE (i %% 100) / 100.0 END,
       '[]', '', '{}', '', '', 'ja', '', '', '', %(steps)s,
       now() - (i * (730.0 * 86400 / %(jobs)s)) * interval '1 second',
       now() - (i * (730.0 * 86400 / %(jobs)s)) * interval '1 second'
FROM generate_series(1, %(jobs)s) i, u, m, a;
"""

STEPS_SQL = """
INSERT INTO diagnostics_stepresult (job_id, step_id, phase, position, kb_check_id, kind, facts,
    verdict, error, duration_ms, created_at)
SELECT j.id, 'c' || s, 'check', s, c.id, 'service_status', '{}',
       (ARRAY['pass', 'pass', 'pass', 'fail', 'error'])[1 + (j.id + s) %% 5], '', 40, j.created_at
FROM diagnostics_job j
CROSS JOIN generate_series(1, %(steps)s) s
JOIN diagnostics_check c ON c.article_id = j.article_id AND c.position = 1 + s %% 5;
"""


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def _create_database(database_url: str) -> None:
    import psycopg

    base, name = database_url.split("?", 1)[0].rsplit("/", 1)
    admin_url = base + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _fill(jobs: int, steps: int) -> None:
    from django.db import connection

    from diagnostics.models import Job

    if Job.objects.exists():
        print(f"reusing {Job.objects.count():,} jobs")
        return
    with connection.cursor() as cur:
        began = time.monotonic()
        cur.execute(FILL_SQL.replace("%%", "%"))
        cur.execute(JOBS_SQL, {"jobs": jobs, "steps": steps})
        print(f"jobs: {jobs:,} in {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        cur.execute(STEPS_SQL, {"steps": steps})
        print(f"step results: {cur.rowcount:,} in {time.monotonic() - began:.0f} s")
        cur.execute("ANALYZE")


def _percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return f"p50 {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms"


def _measure(runs: int) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from diagnostics import dashboard

    calls = {
        "jobs_per_day": dashboard.jobs_per_day,
        "top_articles": dashboard.top_articles,
        "failing_checks": dashboard.failing_checks,
        "fix_success": dashboard.fix_success,
        "repeated_failures": dashboard.repeated_failures,
        "unmatched_texts": dashboard.unmatched_texts,
    }
    for name, call in calls.items():
        samples = []
        for _ in range(runs):
            began = time.perf_counter()
            call(timezone.now())
            samples.append((time.perf_counter() - began) * 1000)
        print(f"{name:18} {_percentiles(samples)}")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-root", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client()
    client.force_login(user)
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        response = client.get("/console/")
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.status_code
    print(f"{'GET /console/':18} {_percentiles(samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=10, help="step results per job")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url must name a PostgreSQL database")
    _create_database(args.database_url)
    _setup(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    _fill(args.jobs, args.steps)
    _measure(args.runs)


if __name__ == "__main__":
    main()
