"""The settings files `manage.py` reads under the real environment, so that a second terminal
finds the settings of the running `make run` without exporting anything.

1. the demo's settings file (`$KAIKETSU_DEMO_ENV`, default var/demo.env), which `make run`
   rewrites on every start with the values its processes use: DEBUG, the database, the Redis
   it started or reused and the Celery queue;
2. `.env` in the checkout, the person's own configuration (see .env.example).

A variable already in the environment always wins, then the demo's file, then `.env`. Neither
file exists in the Docker image (.dockerignore), where compose passes the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_ENV_VARIABLE = "KAIKETSU_DEMO_ENV"
# The settings that decide which data, which Redis and which worker a command talks to;
# secrets are not copied (with DEBUG on the demo needs none; otherwise keep them in .env).
DEMO_SETTINGS = ("DJANGO_SETTINGS_MODULE", "DEBUG", "DATABASE_URL", "REDIS_URL", "KAIKETSU_QUEUE")


def demo_env_path() -> Path:
    """Where `make run` writes its settings and `manage.py` reads them."""
    return Path(os.environ.get(DEMO_ENV_VARIABLE) or BASE_DIR / "var" / "demo.env")


def read_env_files(files: list[Path] | None = None) -> list[Path]:
    """Add the files' variables (default: the demo's file, then .env) to os.environ without
    overriding any; return the files read."""
    read = []
    for path in files if files is not None else [demo_env_path(), BASE_DIR / ".env"]:
        if path.is_file():
            environ.Env.read_env(path, overwrite=False)
            read.append(path)
    return read


def write_demo_env(env: dict[str, str]) -> Path:
    """Write DEMO_SETTINGS as set in `env` to the demo's file (owner-only: it may hold the
    database URL's password); return its path."""
    path = demo_env_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `make run` on every start: the settings its portal, worker and winsim use.",
        "# manage.py reads this file (variables already set in the environment win), so a second",
        "# terminal talks to the same database, Redis and worker. Edit .env instead: see README.",
    ]
    lines += [f"{name}={env[name]}" for name in DEMO_SETTINGS if env.get(name)]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
