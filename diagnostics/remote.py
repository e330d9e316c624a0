"""Run a plan on a Windows host over WinRM: the only module that imports pywinrm.

One job is one WinRM command (docs/protocol.md): a cmd shell opened with code page 65001,
``powershell -EncodedCommand <bootstrap>`` as the command, and the runner and the plan sent
on stdin as two base64 lines. Output is read with ``get_command_output_raw`` so each complete
JSON line reaches the caller the moment it arrives. Every failure becomes a RemoteError whose
text names the machine and never contains the password.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

POWERSHELL_DIR = Path(__file__).resolve().parent / "powershell"
BOOTSTRAP_MARKER = "# kaiketsu-bootstrap v1"
# cmd.exe refuses longer command lines ("The command line is too long.").
MAX_COMMAND_LINE = 8191
MAX_LINE_BYTES = 1024 * 1024
GARBAGE_KEEP = 20
GARBAGE_CUT = 200
TRANSCRIPT_HALF = 64 * 1024
STDERR_HALF = 8 * 1024
# WinRM's default MaxEnvelopeSizekb is 500; stay well below it per Send.
STDIN_CHUNK = 128 * 1024

# "untrusted": the portal itself refused to send the credential there (never contacted).
ERROR_KINDS = frozenset(
    {"refused", "timeout", "auth", "tls", "protocol", "garbage", "exit", "untrusted"}
)


@dataclass(frozen=True)
class Target:
    """A machine to reach: ``http`` means NTLM with message encryption, ``https`` Basic over TLS."""

    name: str
    address: str
    port: int
    scheme: str
    username: str = field(repr=False)
    password: str = field(repr=False)
    verify_tls: bool | str = True  # False for self-signed demo hosts, or a CA bundle path

    @property
    def endpoint(self) -> str:
        host = self.address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        return f"{self.scheme}://{host}:{self.port}/wsman"


class RemoteError(Exception):
    """A run that could not be carried out; ``str()`` names the machine, ``kind`` says why.

    ``outcome`` holds what was received before the failure, when anything was.
    """

    def __init__(self, kind: str, message: str, outcome: RunOutcome | None = None) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown RemoteError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.outcome = outcome


@dataclass
class RunOutcome:
    """What one command produced (the step lines themselves went to ``on_line``)."""

    exit_code: int
    complete: bool  # the runner's {"end": ...} line arrived
    garbage: list[str]  # non-JSON stdout lines, each cut to 200 chars, at most 20 kept
    stderr: str  # decoded, CLIXML progress records removed, bounded
    transcript: str  # raw stdout bounded: head 64 KiB + "[... N bytes cut ...]" + tail 64 KiB


# --------------------------------------------------------------------------------------------
# The command: pure, testable
# --------------------------------------------------------------------------------------------


@cache  # bootstrap.ps1 and runner.ps1, read once per process
def _script(name: str) -> str:
    return (POWERSHELL_DIR / name).read_text(encoding="utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plan_json(plan: dict[str, Any]) -> str:
    """The plan as sent to the runner: compact JSON, non-ASCII kept (it travels base64)."""
    return json.dumps(plan, ensure_ascii=False, separators=(",", ":"))


def build_command(plan: dict[str, Any]) -> tuple[str, bytes]:
    """Return (command line, stdin bytes) for ``plan``.

    The command line depends only on the bootstrap, never on the plan, so no KB value can
    reach PowerShell as code; stdin is two ASCII base64 lines (runner, plan).
    """
    bootstrap = _script("bootstrap.ps1")
    encoded = _b64(bootstrap.encode("utf-16-le"))
    command = (
        "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand " + encoded
    )
    if len(command) >= MAX_COMMAND_LINE:
        raise ValueError(f"bootstrap command line is {len(command)} characters, limit 8191")
    runner = _script("runner.ps1")
    stdin = _b64(runner.encode("utf-8")) + "\n" + _b64(plan_json(plan).encode("utf-8")) + "\n"
    return command, stdin.encode("ascii")


# --------------------------------------------------------------------------------------------
# Output handling: line splitting, bounded buffers, CLIXML
# --------------------------------------------------------------------------------------------


class _Bounded:
    """Keeps the first and last ``half`` bytes of a stream and counts what lies between."""

    def __init__(self, half: int) -> None:
        self.half = half
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {cut} bytes cut ...]\n".encode() if cut > 0 else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", errors="replace")


class _LineSplitter:
    """Turns stdout chunks into JSON objects handed to ``on_line`` as soon as a line is whole."""

    def __init__(self, on_line: Callable[[dict[str, Any]], None]) -> None:
        self.on_line = on_line
        self.pending = bytearray()
        self.overflow = False  # inside a line already judged too long
        self.garbage: list[str] = []
        self.complete = False
        self.first = True

    def feed(self, data: bytes) -> None:
        while data:
            newline = data.find(b"\n")
            if newline < 0:
                self._append(data)
                return
            self._append(data[:newline])
            data = data[newline + 1 :]
            self._finish_line()

    def close(self) -> None:
        if self.pending or self.overflow:
            self._finish_line()

    def _append(self, data: bytes) -> None:
        if self.overflow:
            return
        self.pending += data
        if len(self.pending) > MAX_LINE_BYTES:
            self._add_garbage(bytes(self.pending[: GARBAGE_CUT * 4]))
            self.pending.clear()
            self.overflow = True

    def _finish_line(self) -> None:
        raw = bytes(self.pending)
        self.pending.clear()
        if self.overflow:
            self.overflow = False
            return
        if self.first:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, if any
            self.first = False
        line = raw.rstrip(b"\r")
        if not line.strip():
            return
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._add_garbage(line)
            return
        if not isinstance(obj, dict):
            self._add_garbage(line)
            return
        if obj.get("end") is True:
            self.complete = True
        self.on_line(obj)

    def _add_garbage(self, line: bytes) -> None:
        if len(self.garbage) < GARBAGE_KEEP:
            self.garbage.append(line.decode("utf-8", errors="replace")[:GARBAGE_CUT])


_CLIXML_STRING = re.compile(r'<S S="(?P<stream>[A-Za-z]+)">(?P<text>.*?)</S>', re.DOTALL)
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def clean_stderr(data: bytes) -> str:
    """Decode stderr; CLIXML is reduced to its error/warning text, progress records dropped."""
    text = data.decode("utf-8", errors="replace")
    if "#< CLIXML" not in text:
        return text
    kept: list[str] = []
    for match in _CLIXML_STRING.finditer(text):
        if match.group("stream").lower() in ("error", "warning"):
            value = html.unescape(match.group("text"))
            kept.append(_CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value))
    outside = re.sub(r"#< CLIXML\r?\n?|<Objs.*?</Objs>", "", text, flags=re.DOTALL).strip()
    return ("".join(kept) + ("\n" + outside if outside else "")).strip()


# --------------------------------------------------------------------------------------------
# WinRM
# --------------------------------------------------------------------------------------------


def _protocol(target: Target, operation_timeout_s: int, read_timeout_s: float) -> Protocol:
    if target.scheme == "http":
        transport, encryption = "ntlm", "always"  # never send a plaintext SOAP body
    elif target.scheme == "https":
        transport, encryption = "basic", "never"  # TLS carries it
    else:
        raise RemoteError("protocol", f"{target.name}: unknown scheme {target.scheme!r}")
    verify = target.verify_tls
    protocol = Protocol(
        endpoint=target.endpoint,
        transport=transport,
        username=target.username,
        password=target.password,
        server_cert_validation="validate" if verify else "ignore",
        ca_trust_path=verify if isinstance(verify, str) else None,
        read_timeout_sec=read_timeout_s,
        operation_timeout_sec=operation_timeout_s,
        message_encryption=encryption,
        proxy=None,  # proxies from the environment must not see WinRM traffic
    )
    return protocol


def _read_timeout(operation_timeout_s: int) -> float:
    # A Receive legitimately waits operation_timeout_s before the TimedOut fault; allow margin.
    return operation_timeout_s + min(5, max(1, operation_timeout_s))


def _describe(target: Target) -> str:
    return f"{target.name} ({target.address}:{target.port})"


def _map_error(exc: BaseException, target: Target, connected: bool) -> RemoteError:
    """Translate a transport or protocol exception into a RemoteError naming the machine."""
    who = _describe(target)
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return RemoteError(
            "tls",
            f"TLS error talking to {who}: the certificate or TLS setup was rejected ({_short(exc)})",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return RemoteError("timeout", f"{who} did not accept a connection in time")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return RemoteError("timeout", f"{who} stopped answering (no reply within the read timeout)")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        # The peer reset the connection in the middle of an answer.
        return RemoteError(
            "protocol", f"the connection to {who} was dropped in the middle of the job"
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        if connected:
            return RemoteError(
                "protocol", f"the connection to {who} was dropped in the middle of the job"
            )
        return RemoteError(
            "refused", f"could not connect to {who}: connection refused or host unreachable"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return RemoteError("protocol", f"HTTP error talking to {who}: {_short(exc)}")
    if isinstance(exc, InvalidCredentialsError):
        return RemoteError(
            "auth", f"{who} rejected the credentials (HTTP 401): check the user name and password"
        )
    if isinstance(exc, WSManFaultError):
        return RemoteError("protocol", f"{who} answered with a WinRM fault: {exc.reason}")
    if isinstance(exc, WinRMTransportError):
        return RemoteError("protocol", f"{who} answered HTTP {exc.code} to a WinRM request")
    if isinstance(exc, WinRMOperationTimeoutError):
        return RemoteError("timeout", f"{who} timed out a WinRM operation")
    if isinstance(exc, WinRMError):
        return RemoteError("protocol", f"WinRM error with {who}: {_short(exc)}")
    if isinstance(
        exc, ET.ParseError | StopIteration | AssertionError | KeyError | ValueError | TypeError
    ):
        return RemoteError("protocol", f"{who} sent a malformed WinRM response")
    return RemoteError("protocol", f"unexpected error talking to {who}: {type(exc).__name__}")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _close(protocol: Protocol, shell_id: str | None) -> None:
    """Delete the shell and drop the connection; errors here change nothing for the caller."""
    # A failed Delete must not hide the job's own result.
    with contextlib.suppress(Exception):
        if shell_id is not None:
            protocol.close_shell(shell_id)
    with contextlib.suppress(Exception):
        protocol.transport.close_session()


def run_plan(
    target: Target,
    plan: dict[str, Any],
    on_line: Callable[[dict[str, Any]], None],
    *,
    deadline_s: float = 300,
    operation_timeout_s: int = 10,
) -> RunOutcome:
    """Run ``plan`` on ``target`` as one WinRM command, streaming each result line to ``on_line``.

    Returns the outcome when the command ended with exit code 0 (``complete`` tells whether
    the runner reached its end line). Raises RemoteError for a failed connection,
    credentials, TLS, a protocol error, the deadline (kind ``timeout``, after signalling the
    command to terminate), a non-zero exit (kind ``exit``, stderr tail in the text) or output
    that is not the runner's (kind ``garbage``). Lines delivered before a failure stay
    delivered; ``RemoteError.outcome`` then holds what arrived.
    """
    command, stdin = build_command(plan)
    started = time.monotonic()
    deadline = started + deadline_s
    protocol = _protocol(target, operation_timeout_s, _read_timeout(operation_timeout_s))
    splitter = _LineSplitter(on_line)
    transcript = _Bounded(TRANSCRIPT_HALF)
    stderr = _Bounded(STDERR_HALF)
    shell_id: str | None = None
    connected = False

    def outcome(exit_code: int) -> RunOutcome:
        return RunOutcome(
            exit_code=exit_code,
            complete=splitter.complete,
            garbage=list(splitter.garbage),
            stderr=clean_stderr(stderr.text().encode("utf-8")),
            transcript=transcript.text(),
        )

    try:
        try:
            shell_id = protocol.open_shell(codepage=65001, noprofile=True)
            connected = True
            command_id = protocol.run_command(shell_id, command)
            for offset in range(0, len(stdin), STDIN_CHUNK):
                chunk = stdin[offset : offset + STDIN_CHUNK]
                protocol.send_command_input(
                    shell_id, command_id, chunk, end=offset + STDIN_CHUNK >= len(stdin)
                )
            while True:
                if time.monotonic() >= deadline:
                    # Signal terminate; the timeout is what the caller must see either way.
                    with contextlib.suppress(Exception):
                        protocol.cleanup_command(shell_id, command_id)
                    raise RemoteError(
                        "timeout",
                        f"{_describe(target)} did not finish the job within {deadline_s:g} s",
                        outcome(-1),
                    )
                try:
                    out, err, exit_code, done = protocol.get_command_output_raw(
                        shell_id, command_id
                    )
                except WinRMOperationTimeoutError:
                    continue  # nothing new yet: WinRM's normal "still running"
                if out:
                    transcript.add(out)
                    splitter.feed(out)
                if err:
                    stderr.add(err)
                if done:
                    break
            splitter.close()
        except RemoteError:
            raise
        except Exception as exc:
            mapped = _map_error(exc, target, connected)
            mapped.outcome = outcome(-1) if connected else None
            raise mapped from exc
        result = outcome(exit_code)
        if exit_code != 0:
            tail = result.stderr[-500:].strip() or (result.garbage[-1] if result.garbage else "")
            raise RemoteError(
                "exit",
                f"the runner on {_describe(target)} exited with code {exit_code}"
                + (f": {tail}" if tail else ""),
                result,
            )
        if not result.complete and result.garbage:
            raise RemoteError(
                "garbage",
                f"{_describe(target)} answered with output that is not the runner's "
                f"(first line: {result.garbage[0][:80]!r})",
                result,
            )
        return result
    finally:
        _close(protocol, shell_id)


def test_connection(target: Target, timeout_s: float = 10) -> str:
    """Open a shell on ``target``, run ``hostname`` and return its answer (RemoteError if not)."""
    operation = max(1, int(timeout_s // 2))
    protocol = _protocol(target, operation, max(float(timeout_s), operation + 1.0))
    shell_id: str | None = None
    connected = False
    deadline = time.monotonic() + timeout_s
    try:
        try:
            shell_id = protocol.open_shell(codepage=65001, noprofile=True)
            connected = True
            command_id = protocol.run_command(shell_id, "hostname")
            out = bytearray()
            while True:
                if time.monotonic() >= deadline:
                    raise RemoteError(
                        "timeout", f"{_describe(target)} did not answer `hostname` in time"
                    )
                try:
                    chunk, _err, exit_code, done = protocol.get_command_output_raw(
                        shell_id, command_id
                    )
                except WinRMOperationTimeoutError:
                    continue
                out += chunk
                if done:
                    break
        except RemoteError:
            raise
        except Exception as exc:
            raise _map_error(exc, target, connected) from exc
        if exit_code != 0:
            raise RemoteError(
                "exit", f"`hostname` on {_describe(target)} exited with code {exit_code}"
            )
        return out.decode("utf-8", errors="replace").strip()
    finally:
        _close(protocol, shell_id)


# pytest would otherwise collect test_connection as a test when a test module imports it.
test_connection.__test__ = False  # type: ignore[attr-defined]
