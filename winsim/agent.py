"""winsim's agent mode: a simulated PC that enrols with a portal and long-polls it over HTTP.

It does what ``agent/kaiketsu-agent.ps1`` does, with the host's own state, dial model and
faults: enrol with a one-time token and pin the portal's public key; poll for work (back-off
when the portal is away, stop for good when the credential is refused: revoked); check each
plan's signature, machine, expiry and task id (never run a plan twice) before running it with
the same step handlers as the WinRM side; post each result line as it is produced. A host that
is rebooting does not poll, and comes back with a new boot id. Faults: ``agent_offline`` (the
agent never calls), ``slow_step_ms`` (each step), ``drop_after_lines`` (one shot: the agent
dies after N lines and polls again as a fresh process).

The wire contract is ``agent/protocol.json``; tests/test_agent_contract.py holds this module,
the portal and the PowerShell agent to it.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from winsim.hosts import Host

log = logging.getLogger(__name__)

PROTOCOL = json.loads(
    (Path(__file__).resolve().parent.parent / "agent" / "protocol.json").read_text("utf-8")
)
VERSION = "winsim-agent/1"
MAX_BACKOFF_S = 30.0


class PlanRefused(Exception):
    """A plan the agent will not run: bad signature, another machine's, expired, replayed."""


@dataclass
class Identity:
    """What enrolment leaves on the PC: its name at the portal, credential and pinned key."""

    machine: str
    credential: str
    modulus: str
    exponent: str
    done_tasks: set[int] = field(default_factory=set)  # every task id it ever ran


def boot_id(host: Host) -> str:
    return f"{host.computer_name}-boot-{host.boot_count}"


def _public_key(identity: Identity) -> rsa.RSAPublicKey:
    n = int.from_bytes(base64.b64decode(identity.modulus), "big")
    e = int.from_bytes(base64.b64decode(identity.exponent), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def check_envelope(identity: Identity, answer: dict[str, Any], now: float) -> tuple[int, str]:
    """(task id, plan JSON) of a work answer the agent may run, or PlanRefused saying why.

    The same checks, in the same order, as ``Test-KaiketsuEnvelope`` in the PowerShell agent.
    """
    try:
        payload = str(answer["payload"])
        signature = base64.b64decode(str(answer["signature"]), validate=True)
    except (KeyError, ValueError) as exc:
        raise PlanRefused(f"malformed work answer: {exc}") from None
    try:
        _public_key(identity).verify(
            signature, payload.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, UnicodeEncodeError):
        raise PlanRefused("signature does not verify with the portal's key") from None
    envelope = json.loads(payload)
    if sorted(envelope) != sorted(PROTOCOL["envelope"]) or envelope["v"] != PROTOCOL["version"]:
        raise PlanRefused("envelope fields or version differ from this agent's")
    if envelope["machine"] != identity.machine:
        raise PlanRefused(f"plan is for {envelope['machine']!r}, not this machine")
    if envelope["task"] != answer.get("task"):
        raise PlanRefused("envelope task differs from the answer's task")
    skew = PROTOCOL["clock_skew_seconds"]
    if now > envelope["expires"] + skew:
        raise PlanRefused("plan expired")
    if envelope["issued"] > now + skew:
        raise PlanRefused("plan issued in the future")
    if envelope["task"] in identity.done_tasks:
        raise PlanRefused(f"task {envelope['task']} already ran here (replay)")
    plan = json.loads(envelope["plan"])
    if str(plan.get("job")) != envelope["job"]:
        raise PlanRefused("plan's job differs from the envelope's")
    return envelope["task"], envelope["plan"]


class Agent(threading.Thread):
    """The agent process of one simulated PC, until ``stop()`` or its credential is refused."""

    def __init__(self, host: Host, portal: str, token: str = "") -> None:
        super().__init__(name=f"winsim-agent-{host.name}", daemon=True)
        self.host, self.portal, self.token = host, portal.rstrip("/"), token
        self.identity: Identity | None = None
        self.stopped = threading.Event()
        self.revoked = False
        self.refused: list[str] = []  # why plans were refused, newest last (tests read it)
        self.polls = 0
        self.backoff = 1.0

    def stop(self) -> None:
        self.stopped.set()

    # --- HTTP ------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 30
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "User-Agent": VERSION}
        if self.identity is not None:
            headers["Authorization"] = f"{PROTOCOL['auth_scheme']} {self.identity.credential}"
        # The portal URL is the installer's http(s) argument (checked by the /sim/agent control).
        request = urllib.request.Request(  # noqa: S310
            self.portal + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def enrol(self) -> None:
        body = json.dumps(
            {
                "token": self.token,
                "computer_name": self.host.computer_name,
                "version": VERSION,
                "boot": boot_id(self.host),
            }
        ).encode()
        status, data = self._call("POST", PROTOCOL["paths"]["enrol"], body)
        if status != 200:
            raise PlanRefused(f"enrolment refused ({status}): {data[:200]!r}")
        answer = json.loads(data)
        key = answer["public_key"]
        self.identity = Identity(
            answer["machine"], answer["credential"], key["modulus"], key["exponent"]
        )
        self.token = ""  # used: the PC keeps the credential, never the token

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.host.agent_offline or self.host.is_down():
                self.stopped.wait(0.2)
                continue
            try:
                if self.identity is None:
                    self.enrol()
                self.poll_once()
                self.backoff = 1.0
            except PlanRefused as exc:  # enrolment refused: nothing to do but say so
                log.warning("winsim agent %s: %s", self.host.name, exc)
                self.refused.append(str(exc))
                return
            except (OSError, ValueError) as exc:  # the portal is away: back off
                log.info("winsim agent %s: portal away (%s)", self.host.name, exc)
                self.stopped.wait(self.backoff)
                self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
            if self.revoked:
                return

    def poll_once(self) -> None:
        query = urllib.parse.urlencode({"boot": boot_id(self.host), "version": VERSION})
        status, data = self._call("GET", f"{PROTOCOL['paths']['work']}?{query}", timeout=90)
        self.polls += 1
        if status == PROTOCOL["status"]["revoked"]:
            log.warning("winsim agent %s: credential refused; stopping", self.host.name)
            self.revoked = True
            return
        if status == PROTOCOL["status"]["no_work"]:
            return
        if status == PROTOCOL["status"]["slow_down"]:
            self.stopped.wait(5)
            return
        if status != 200:
            return
        if self.host.is_down():  # the answer came while the PC went down: it is lost
            return
        answer = json.loads(data)
        assert self.identity is not None
        try:
            task, plan_json = check_envelope(self.identity, answer, time.time())
        except PlanRefused as exc:
            self.refused.append(str(exc))
            log.warning("winsim agent %s: plan refused: %s", self.host.name, exc)
            if isinstance(answer.get("task"), int) and "replay" not in str(exc):
                self._post(answer["task"], json.dumps({"fatal": f"agent: {exc}"}))
            return
        self.identity.done_tasks.add(task)
        self.run_plan(task, plan_json)

    def run_plan(self, task: int, plan_json: str) -> None:
        from winsim import steps  # the same handlers the WinRM side runs

        drop_after = self.host.faults.drop_after_lines
        self.host.faults.drop_after_lines = 0  # one shot
        for n, line in enumerate(steps.run_plan(self.host, plan_json), start=1):
            if self.stopped.is_set() or self.host.is_down():
                return  # the PC went down mid-plan: the rest never leaves it
            self._post(task, line)
            if drop_after and n >= drop_after:
                log.info("winsim agent %s: dropped after %s lines", self.host.name, n)
                return

    def _post(self, task: int, line: str) -> None:
        path = PROTOCOL["paths"]["lines"].format(task=task)
        status, data = self._call("POST", path, line.encode("utf-8") + b"\n")
        if status != 200:
            log.warning("winsim agent %s: line refused (%s): %s", self.host.name, status, data)
