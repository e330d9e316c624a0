"""The Windows Remote Shell (cmd) of one simulated host: shells, commands, their output.

What a command line does on a real host is decided here: the kaiketsu bootstrap runs the
plan it reads on stdin (through ``winsim.steps.run_plan``), ``hostname`` and ``whoami``
answer, a command line over cmd.exe's 8191 characters fails as cmd.exe fails it, PowerShell
7-only syntax fails as Windows PowerShell 5.1's parser fails it, and anything else exits 1
saying winsim runs only the runner protocol.

Threading: every ``Command`` method is called on the server's event loop thread. The plan
runs in a worker thread of its own (steps sleep to simulate latency) and hands each line to
the loop with ``call_soon_threadsafe``, so a waiting Receive answers the moment a step ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import shlex
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from winsim import pssyntax

if TYPE_CHECKING:
    from winsim.hosts import Host

MAX_COMMAND_LINE = 8191  # cmd.exe's limit (Microsoft KB830473)
BOOTSTRAP_MARKER = "# kaiketsu-bootstrap v1"
# bootstrap.ps1's first statement and what it prints under ConstrainedLanguage (review D-9);
# tests/test_powershell.py keeps these equal to the script's own text.
LANGUAGE_MODE_GUARD = "if ($ExecutionContext.SessionState.LanguageMode -ne 'FullLanguage') {"
LANGUAGE_MODE_FATAL = (
    '{"fatal": "language_mode: PowerShell runs in ConstrainedLanguage mode here '
    '(AppLocker/WDAC); the runner needs FullLanguage"}'
)
CLM_NEW_OBJECT_ERROR = (
    "New-Object : Cannot create type. Only core types are supported in this language mode.\r\n"
    "    + CategoryInfo          : PermissionDenied: (:) [New-Object], PSNotSupportedException\r\n"
    "    + FullyQualifiedErrorId : CannotCreateTypeConstrainedLanguage,"
    "Microsoft.PowerShell.Commands.NewObjectCommand\r\n"
)
RECEIVE_CHUNK = 64 * 1024  # raw bytes per stream per Receive; well under MaxEnvelopeSize
UTF8_CODEPAGE = 65001

_SILENT_PROGRESS = re.compile(
    r"""^\s*\$ProgressPreference\s*=\s*['"]SilentlyContinue['"]""", re.IGNORECASE | re.MULTILINE
)
_ENCODED_FLAGS = ("-encodedcommand", "-enc", "-ec", "-e", "-en", "-enco", "-encodedc")
CLIXML_HEADER = (
    '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
)
CLIXML_FOOTER = "</Objs>"
# The record powershell.exe emits when it loads its first module, seen by every WinRM client
# that does not silence progress (pywinrm's own tests carry the same record).
CLIXML_PROGRESS = (
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record">'
    "<AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC>"
    "<T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>"
)
UNSUPPORTED = (
    "winsim: '{name}' is not supported here. winsim runs only the kaiketsu runner protocol "
    "(powershell -EncodedCommand with the '# kaiketsu-bootstrap v1' bootstrap, runner and plan "
    "on stdin; see docs/protocol.md), plus hostname and whoami."
)


def encode_output(text: str, codepage: int) -> bytes:
    """Bytes as the host's console writes them: UTF-8 under 65001, else non-ASCII becomes '?'.

    A Japanese host opened with pywinrm's default code page 437 really returns '?' for
    every Japanese character; that is the trap this reproduces.
    """
    if codepage == UTF8_CODEPAGE:
        return text.encode("utf-8")
    return text.encode("ascii", "replace")


def clixml_error_lines(text: str) -> str:
    """An error record's text as CLIXML ``<S S="Error">`` elements, one per line."""
    parts = []
    for line in text.splitlines():
        value = escape(line).replace("\r", "") + "_x000D__x000A_"
        parts.append(f'<S S="Error">{value}</S>')
    return "".join(parts)


@dataclass
class Command:
    """One command's streams and state. Loop-thread only, except ``cancelled``."""

    id: str
    codepage: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    exit_code: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    on_stdin_end: Callable[[Command], None] | None = None
    clixml_open: bool = False
    lines_sent: int = 0  # stdout lines handed to the client (faults.drop_after_lines)

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def write_out(self, text: str) -> None:
        """Append text to stdout in the shell's code page."""
        self.stdout += encode_output(text, self.codepage)
        self.changed.set()

    def write_err(self, text: str) -> None:
        """Append text to stderr in the shell's code page."""
        self.stderr += encode_output(text, self.codepage)
        self.changed.set()

    def open_clixml(self) -> None:
        """Start stderr's CLIXML document once, as powershell.exe does."""
        if not self.clixml_open:
            self.clixml_open = True
            self.write_err(CLIXML_HEADER)

    def finish(self, exit_code: int) -> None:
        """Mark the process exited; closes any open CLIXML document first."""
        if self.done:
            return
        if self.clixml_open:
            self.write_err(CLIXML_FOOTER)
        self.exit_code = exit_code
        self.changed.set()

    def feed_stdin(self, data: bytes, end: bool) -> None:
        """Data from a WS-Man Send; with ``end`` stdin is closed and the process may go on."""
        if self.stdin_closed:
            return
        self.stdin += data
        if end:
            self.stdin_closed = True
            if self.on_stdin_end is not None:
                self.on_stdin_end(self)

    def take(self) -> tuple[bytes, bytes, int | None]:
        """Output ready now (up to a chunk per stream); exit code only once all is drained."""
        out = bytes(self.stdout[:RECEIVE_CHUNK])
        err = bytes(self.stderr[:RECEIVE_CHUNK])
        del self.stdout[: len(out)]
        del self.stderr[: len(err)]
        drained = not self.stdout and not self.stderr
        if drained and not self.done:
            self.changed.clear()
        return out, err, (self.exit_code if drained else None)

    def has_news(self) -> bool:
        return bool(self.stdout or self.stderr or self.done)


@dataclass
class Shell:
    """A cmd shell opened by Create."""

    id: str
    codepage: int
    commands: dict[str, Command] = field(default_factory=dict)


class HostShells:
    """The shells of one host and how its command lines behave."""

    def __init__(self, host: Host, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.loop = loop
        self.shells: dict[str, Shell] = {}

    def create(self, codepage: int) -> Shell:
        """Open a shell (Create)."""
        shell = Shell(id=str(uuid.uuid4()).upper(), codepage=codepage)
        self.shells[shell.id] = shell
        return shell

    def delete(self, shell: Shell) -> None:
        """Close a shell (Delete); its running commands are terminated."""
        for command in shell.commands.values():
            command.cancelled.set()
        self.shells.pop(shell.id, None)

    def signal_terminate(self, shell: Shell, command: Command) -> None:
        """Signal terminate: the process is gone and so is its CommandId."""
        command.cancelled.set()
        command.finish(command.exit_code if command.done else -1)
        shell.commands.pop(command.id, None)

    def start(self, shell: Shell, command_line: str) -> Command:
        """Start a command (Command) and return it; its output arrives on its streams."""
        command = Command(id=str(uuid.uuid4()).upper(), codepage=shell.codepage)
        shell.commands[command.id] = command
        self._dispatch(command, command_line)
        return command

    def _dispatch(self, command: Command, command_line: str) -> None:
        if len(command_line) > MAX_COMMAND_LINE:
            # cmd.exe refuses before anything starts; stderr, exit code 1.
            command.write_err("The command line is too long.\r\n")
            command.finish(1)
            return
        words = _split(command_line)
        name = words[0].lower().removesuffix(".exe") if words else ""
        if name == "hostname" and len(words) == 1:
            command.write_out(self.host.computer_name + "\r\n")
            command.finish(0)
        elif name == "whoami" and len(words) == 1:
            command.write_out(whoami(self.host) + "\r\n")
            command.finish(0)
        elif name == "powershell":
            self._powershell(command, words)
        else:
            command.write_err(UNSUPPORTED.format(name=words[0] if words else "") + "\r\n")
            command.finish(1)

    def _powershell(self, command: Command, words: list[str]) -> None:
        script = decode_encoded_command(words)
        if script is None:
            command.write_err(UNSUPPORTED.format(name=" ".join(words[:3])) + "\r\n")
            command.finish(1)
            return
        error = pssyntax.find_ps7_syntax(script)
        if error is not None:
            command.open_clixml()
            command.write_err(clixml_error_lines(error.render()))
            command.finish(1)
            return
        if not script.lstrip("\ufeff").startswith(BOOTSTRAP_MARKER):
            command.open_clixml()
            command.write_err(clixml_error_lines(UNSUPPORTED.format(name="powershell script")))
            command.finish(1)
            return
        if not _SILENT_PROGRESS.search(script):
            command.open_clixml()
            command.write_err(CLIXML_PROGRESS)
        if self.host.language_mode != "FullLanguage":
            if LANGUAGE_MODE_GUARD in script:  # the bootstrap notices and says so
                command.write_out(LANGUAGE_MODE_FATAL + "\r\n")
            else:  # its first New-Object of a .NET type fails, as on Windows
                command.open_clixml()
                command.write_err(clixml_error_lines(CLM_NEW_OBJECT_ERROR))
            command.finish(1)
            return
        command.on_stdin_end = self._run_runner

    def _run_runner(self, command: Command) -> None:
        """stdin is complete: decode runner and plan, check the runner, run the plan."""
        if len([ln for ln in bytes(command.stdin).splitlines() if ln.strip()]) < 2:
            # What bootstrap.ps1 itself prints when stdin is short.
            command.write_out(
                '{"fatal": "bootstrap: expected the runner and the plan on stdin"}\r\n'
            )
            command.finish(1)
            return
        try:
            runner, plan_json = decode_stdin(bytes(command.stdin))
        except ValueError as err:
            command.open_clixml()
            command.write_err(clixml_error_lines(f"kaiketsu bootstrap: {err}"))
            command.finish(1)
            return
        error = pssyntax.find_ps7_syntax(runner)
        if error is not None:
            # The bootstrap turns the runner into a ScriptBlock; 5.1 fails in Create().
            text = (
                'Exception calling "Create" with "1" argument(s): "'
                + error.render().split("    + CategoryInfo")[0].rstrip()
                + '"\r\n    + CategoryInfo          : NotSpecified: (:) [], MethodInvocationException'
                + "\r\n    + FullyQualifiedErrorId : ParseException\r\n"
            )
            command.open_clixml()
            command.write_err(clixml_error_lines(text))
            command.finish(1)
            return
        if self.host.faults.console_codepage:
            command.codepage = self.host.faults.console_codepage
        worker = threading.Thread(
            target=self._plan_worker,
            args=(command, plan_json),
            name=f"winsim-plan-{self.host.name}",
            daemon=True,
        )
        worker.start()

    def _plan_worker(self, command: Command, plan_json: str) -> None:
        """Worker thread: stream each run_plan line to the loop as soon as it exists."""
        exit_code = 0
        try:
            for line in _iter_plan(self.host, plan_json):
                if command.cancelled.is_set():
                    return
                if _is_fatal(line):
                    exit_code = 1
                self._to_loop(command.write_out, line + "\r\n")
        except Exception as err:  # noqa: BLE001 - a crash must still end the command
            self._to_loop(command.write_err, f"winsim: plan failed: {err!r}\r\n")
            exit_code = 1
        forced = self.host.faults.exit_code
        self._to_loop(command.finish, forced if forced is not None else exit_code)

    def _to_loop(self, fn: Callable[..., None], *args: object) -> None:
        # RuntimeError: the loop is closed because the fleet is shutting down.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)


def _iter_plan(host: Host, plan_json: str) -> Iterator[str]:
    from winsim import steps  # imported late: the host model lives beside the protocol

    return steps.run_plan(host, plan_json)


def _is_fatal(line: str) -> bool:
    if '"fatal"' not in line:
        return False
    try:
        return "fatal" in json.loads(line)
    except ValueError:
        return False


def _split(command_line: str) -> list[str]:
    try:
        return shlex.split(command_line, posix=False)
    except ValueError:
        return command_line.split()


def whoami(host: Host) -> str:
    """What ``whoami`` prints: lower-case ``domain\\user``, or ``computer\\user`` for a local one."""
    authority = host.domain or host.computer_name
    return f"{authority}\\{host.username}".lower()


def decode_encoded_command(words: list[str]) -> str | None:
    """The script of ``powershell ... -EncodedCommand <b64 UTF-16LE>``, or None if there is none."""
    for index, word in enumerate(words[:-1]):
        if word.lower() in _ENCODED_FLAGS or word.lower().startswith("-encodedcommand"):
            try:
                return base64.b64decode(words[index + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


def decode_stdin(data: bytes) -> tuple[str, str]:
    """stdin of the runner protocol: line 1 base64 runner.ps1, line 2 base64 plan JSON (UTF-8)."""
    lines = [line.strip() for line in data.decode("ascii", "replace").splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError("stdin must carry two base64 lines (runner, plan)")
    try:
        runner = base64.b64decode(lines[0], validate=True).decode("utf-8")
        plan = base64.b64decode(lines[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ValueError(f"stdin is not base64 of UTF-8 text ({err})") from err
    return runner.lstrip("\ufeff"), plan
