"""The agent channel's rules (issue #14): enrolment tokens, machine credentials, signed plans,
flood limits and the wake-up that ends a long poll.

The protocol itself (paths, headers, fields) is ``agent/protocol.json``, read here, by winsim's
agent mode and checked against ``agent/*.ps1`` by one test. Secrets handled here (tokens, the
agent's credential) are random 256-bit values: only their SHA-256 is stored, compared in
constant time. The plan is signed with the portal's RSA key (PKCS#1 v1.5, SHA-256), because
Windows PowerShell 5.1 on .NET Framework verifies that with inbox classes (no Ed25519 there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from diagnostics import vault
from diagnostics.models import NAME_VALIDATOR, EnrolmentToken, Machine, SigningKey

log = logging.getLogger(__name__)

PROTOCOL = json.loads(
    (Path(__file__).resolve().parent.parent / "agent" / "protocol.json").read_text("utf-8")
)
WAKE_CHANNEL = "kaiketsu:agent-wake"
RATE_WINDOW_S = 10


class AgentRefused(Exception):
    """A call from an agent that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --- enrolment tokens ----------------------------------------------------------------------------


def create_token(
    created_by: Any = None, machine: Machine | None = None, uses: int = 1, hours: int = 72
) -> tuple[EnrolmentToken, str]:
    """A new one-time (or ``uses``-time, for a batch) enrolment code; the code is shown once."""
    code = secrets.token_urlsafe(32)
    token = EnrolmentToken.objects.create(
        token_hash=digest(code),
        machine=machine,
        uses_left=max(1, uses),
        created_by=created_by,
        expires_at=timezone.now() + timedelta(hours=hours),
    )
    return token, code


def enrol(code: str, computer_name: str, version: str, boot: str) -> tuple[Machine, str]:
    """Redeem an enrolment code: the machine and its new credential (shown to the agent once).

    A machine's earlier credential stops working: enrolling again replaces it.
    """
    name = computer_name.strip()[:63]
    with transaction.atomic():
        token = (
            EnrolmentToken.objects.select_for_update()
            .filter(token_hash=digest(code), expires_at__gt=timezone.now(), uses_left__gt=0)
            .first()
        )
        if token is None:
            raise AgentRefused(403, "enrolment token unknown, used or expired")
        machine = token.machine
        if machine is None:  # a batch: the computer name picks or creates the machine
            if not NAME_VALIDATOR.regex.match(name):
                raise AgentRefused(400, "computer_name is not a valid machine name")
            machine = _batch_machine(name)
        updated = EnrolmentToken.objects.filter(pk=token.pk, uses_left__gt=0).update(
            uses_left=token.uses_left - 1
        )
        if not updated:
            raise AgentRefused(403, "enrolment token unknown, used or expired")
        secret = secrets.token_urlsafe(32)
        now = timezone.now()
        machine.agent_key_hash = digest(secret)
        machine.agent_enrolled_at = now
        machine.agent_revoked_at = None
        machine.agent_last_seen = now
        machine.agent_version = version[:40]
        machine.agent_boot = boot[:64]
        if machine.channel == Machine.Channel.WINRM:
            machine.channel = Machine.Channel.BOTH
        machine.save()
    return machine, f"{machine.pk}.{secret}"


def _batch_machine(name: str) -> Machine:
    from diagnostics.models import Credential

    existing = Machine.objects.filter(name__iexact=name).first()
    if existing is not None:
        return existing
    # An agent-only machine still needs a WinRM credential row (the column is required); it
    # holds no password anyone could use.
    cred, _created = Credential.objects.get_or_create(
        name="agent-only", defaults={"username": "-", "password_encrypted": vault.encrypt("")}
    )
    return Machine.objects.create(
        name=name, address=name, credential=cred, channel=Machine.Channel.AGENT
    )


def revoke(machine: Machine) -> None:
    """Stop the machine's agent at its next call: its credential no longer matches anything."""
    Machine.objects.filter(pk=machine.pk).update(agent_key_hash="", agent_revoked_at=timezone.now())


def authenticate(header: str) -> Machine:
    """The machine whose agent sent ``Authorization: Bearer <id>.<secret>``, or AgentRefused."""
    scheme, _sp, value = (header or "").partition(" ")
    machine_id, _dot, secret = value.strip().partition(".")
    if scheme != PROTOCOL["auth_scheme"] or not machine_id.isdigit() or not secret:
        raise AgentRefused(401, "missing or malformed agent credential")
    machine = Machine.objects.filter(pk=int(machine_id)).first()
    if machine is None or not machine.agent_key_hash:
        raise AgentRefused(401, "unknown or revoked agent credential")
    if not hmac.compare_digest(machine.agent_key_hash, digest(secret)):
        raise AgentRefused(401, "unknown or revoked agent credential")
    return machine


def limit_rate(machine: Machine, what: str, most: int) -> None:
    """Refuse more than ``most`` calls of one kind per machine per 10 s window (a flood)."""
    key = f"kaiketsu:agent-rate:{what}:{machine.pk}:{int(time.time() // RATE_WINDOW_S)}"
    client = _redis()
    count = client.incr(key)
    if count == 1:
        client.expire(key, RATE_WINDOW_S * 2)
    if count > most:
        raise AgentRefused(429, f"too many {what} calls; slow down")


# --- signing -------------------------------------------------------------------------------------


@cache
def _private_key() -> rsa.RSAPrivateKey:
    row = SigningKey.objects.filter(slot=1).first()
    if row is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        try:
            with transaction.atomic():
                SigningKey.objects.create(slot=1, private_pem_encrypted=vault.encrypt(pem))
        except IntegrityError:
            pass  # another process made it first: use theirs
        row = SigningKey.objects.get(slot=1)
    pem = vault.decrypt(row.private_pem_encrypted).encode()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _b64_int(value: int) -> str:
    return base64.b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).decode()


def public_key() -> dict[str, str]:
    """What the agent pins at enrolment: PEM (for tools) and modulus/exponent (for .NET)."""
    pub = _private_key().public_key()
    numbers = pub.public_numbers()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {"pem": pem, "modulus": _b64_int(numbers.n), "exponent": _b64_int(numbers.e)}


def sign_plan(job_id: int, task_id: int, machine: Machine, plan: dict[str, Any]) -> dict[str, str]:
    """The signed envelope of one plan: who it is for, which job and task, until when.

    The payload is sent as the exact text that was signed, so nothing in between (JSON
    re-encoding on either side) can change what the agent verifies.
    """
    now = int(time.time())
    envelope = {
        "v": PROTOCOL["version"],
        "job": str(job_id),
        "task": task_id,
        "machine": machine.name,
        "issued": now,
        "expires": now + settings.KAIKETSU_AGENT_PLAN_TTL,
        "plan": json.dumps(plan, ensure_ascii=True, separators=(",", ":")),
    }
    payload = json.dumps(envelope, ensure_ascii=True, separators=(",", ":"))
    signature = _private_key().sign(payload.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return {"payload": payload, "signature": base64.b64encode(signature).decode()}


# --- waking a long poll ----------------------------------------------------------------------


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def wake(machine_id: int) -> None:
    """Tell every web process that ``machine_id`` has work: its held poll answers now."""
    try:
        _redis().publish(WAKE_CHANNEL, str(machine_id))
    except redis.RedisError as exc:  # the agent's next poll finds the work anyway
        log.warning("agent wake-up for machine %s not sent: %s", machine_id, exc)


class WakeHub:
    """One Redis subscription per web process, fanned out to the polls it holds.

    A held poll costs an asyncio.Event and a coroutine, not a thread or a connection, which
    is what lets one uvicorn process hold thousands of agents (bench/agent_poll_bench.py).
    """

    def __init__(self) -> None:
        self.waiters: dict[int, set[asyncio.Event]] = {}
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _ensure_listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.loop is not loop:
            self.loop = loop
            self.task = loop.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(WAKE_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        machine_id = int(message["data"])
                    except (TypeError, ValueError):
                        continue
                    for event in self.waiters.get(machine_id, ()):
                        event.set()
            except (redis.RedisError, OSError) as exc:
                log.warning("agent wake-up subscription lost (%s); polls fall back to timers", exc)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def wait(self, machine_id: int, check: Any, timeout: float, recheck_s: float) -> Any:
        """Until ``await check()`` returns something truthy or ``timeout`` passes.

        Registered before the first check, so a wake-up between the check and the wait is
        never lost; ``recheck_s`` bounds the wait when a wake-up is lost all the same.
        """
        self._ensure_listening()
        event = asyncio.Event()
        self.waiters.setdefault(machine_id, set()).add(event)
        deadline = time.monotonic() + timeout
        try:
            while True:
                event.clear()
                found = await check()
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, recheck_s))
        finally:
            waiting = self.waiters.get(machine_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    self.waiters.pop(machine_id, None)

    @property
    def held(self) -> int:
        return sum(len(v) for v in self.waiters.values())


hub = WakeHub()
