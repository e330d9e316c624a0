"""The Python half of `make test`: Redis, the migrations check, then pytest.

Usage: python scripts/test.py [PYTEST ARGS...]   (none: pyproject's testpaths + scripts' tests)

Reuses REDIS_URL if it answers, else starts a private Redis for the run and exports its URL to
pytest (and so to the Celery workers the integration tests start). `manage.py makemigrations
--check --dry-run` runs under the settings module pytest uses (pyproject.toml), so a model
change without its migration fails the run. pytest's exit status 5 ("no tests collected") is
turned into a failure: a suite that ran nothing must not pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from services import ROOT, compilemessages_argv, ensure_redis  # noqa: E402

PYTEST_NO_TESTS = 5
OWN_TESTS = "scripts/test_services.py"
OIDC_PROVIDER = ROOT / "tests" / "oidc"  # the SSO tests' OpenID provider (node, oidc-provider)


def pytest_options() -> dict:
    """pyproject.toml's [tool.pytest.ini_options]."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data.get("tool", {}).get("pytest", {}).get("ini_options", {})


def default_pytest_paths() -> list[str]:
    """pyproject's testpaths plus this folder's own tests (the tooling is tested too)."""
    paths = [str(path) for path in pytest_options().get("testpaths", ["tests"])]
    return [*paths, OWN_TESTS] if OWN_TESTS not in paths else paths


def run(argv: list[str], env: dict[str, str]) -> int:
    """Run one step in the foreground, echoing it first; return its exit status."""
    shown = ["python", *argv[1:]] if argv[0] == sys.executable else argv
    print("test: " + " ".join(shown), flush=True)
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def ensure_oidc_provider(env: dict[str, str]) -> int:
    """`npm ci` the SSO tests' provider when its node_modules is missing or older than the lock.

    npm writes node_modules/.package-lock.json on every install: it is the stamp. Without npm
    the step is skipped with a note, and the SSO tests fail saying what to install.
    """
    lock = OIDC_PROVIDER / "package-lock.json"
    stamp = OIDC_PROVIDER / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return 0
    if shutil.which("npm") is None:
        print("test: npm not found: the SSO tests will fail (apt-get install nodejs npm)")
        return 0
    print("test: npm ci (tests/oidc: the OpenID provider of the SSO tests)", flush=True)
    return subprocess.run(["npm", "ci"], cwd=OIDC_PROVIDER, env=env, check=False).returncode


def main(pytest_args: list[str]) -> int:
    """Ensure Redis, check migrations, run pytest; return the status `make` should see."""
    env = dict(os.environ)
    env.setdefault(
        "DJANGO_SETTINGS_MODULE",
        str(pytest_options().get("DJANGO_SETTINGS_MODULE", "portal.settings")),
    )
    redis_url, redis_service = ensure_redis(env.get("REDIS_URL"))
    env["REDIS_URL"] = redis_url
    print(
        f"test: Redis at {redis_url} ({'private, this run only' if redis_service else 'reused'})",
        flush=True,
    )
    try:
        status = run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], env)
        if status != 0:
            print("test: models and migrations differ (or manage.py failed)", file=sys.stderr)
            return status
        # The ja pages are tested in Japanese: compile the catalogues (up-to-date ones are skipped).
        compile_argv = compilemessages_argv()
        if compile_argv:
            status = run([sys.executable, "manage.py", *compile_argv], env)
            if status != 0:
                return status
        status = ensure_oidc_provider(env)
        if status != 0:
            return status
        # With no arguments pytest would run testpaths only: name them and add ours.
        paths = [] if pytest_args else default_pytest_paths()
        status = run([sys.executable, "-m", "pytest", *paths, *pytest_args], env)
        if status == PYTEST_NO_TESTS:
            print("test: pytest collected no tests; that is a failure", file=sys.stderr)
            return 1
        return status
    finally:
        if redis_service:
            redis_service.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
