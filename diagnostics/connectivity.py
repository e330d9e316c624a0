"""The view half of the "test connection" button: a pending entry, the task, the answer.

The view stores a pending entry and enqueues the task by name; the worker
(workflows/connection.py) replaces it with the result; the page polls the entry. The cache is
the right home: the answer matters for a minute, and losing it only means pressing the button
again. Nothing here talks to a machine.
"""

from __future__ import annotations

import re
import secrets
from typing import TypedDict

from celery import current_app
from django.core.cache import cache
from django.db import transaction

from diagnostics.models import Machine

TASK = "diagnostics.tasks.test_connection"
TTL_S = 300
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what secrets.token_urlsafe gives


class Outcome(TypedDict, total=False):
    status: str  # "pending" | "ok" | "error"
    hostname: str
    message: str
    kind: str  # the RemoteError kind
    elapsed_ms: int
    capabilities: list  # plans.capabilities() rows of the preflight (status "ok" only)


def key(machine_id: int, token: str) -> str:
    return f"machine-test:{machine_id}:{token}"


def result(machine_id: int, token: str) -> Outcome | None:
    """What the test has come to, or None for an unknown (or expired) token."""
    if not TOKEN_SHAPE.fullmatch(token):  # never ours: no cache key from arbitrary URL text
        return None
    return cache.get(key(machine_id, token))


def start(machine: Machine) -> str:
    """Record a pending test and enqueue it once the transaction commits; returns its token."""
    token = secrets.token_urlsafe(9)
    cache.set(key(machine.pk, token), Outcome(status="pending"), TTL_S)
    transaction.on_commit(lambda: current_app.send_task(TASK, args=[machine.pk, token]))
    return token
