"""The fleet's network side: one 127.0.0.1 listener per host, all on one asyncio loop.

Why one loop: 500 hosts must fit in one process on 2 cores. A listener is a socket on the
loop's selector (no thread); a connection is a coroutine; a Receive waiting for output is an
``asyncio.Event`` wait. Threads exist only for plans that are running (their steps sleep).

HTTP is the small subset WinRM clients use: HTTP/1.1 POSTs with Content-Length, kept alive
(NTLM authenticates the connection, not the request), answered in order, every answer with
Content-Length, Nagle off (or every request costs ~40 ms on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import struct
import tempfile
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from winsim import auth, tls, wsman
from winsim import dial as dial_model
from winsim.shell import Command, HostShells, Shell

if TYPE_CHECKING:
    from winsim.hosts import Host

log = logging.getLogger("winsim")
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
# Not Windows: winsim's own count of the HTTP requests a host received, so tests and benches
# measure a client's requests where they arrive instead of instrumenting the client.
REQUESTS_PATH = "/winsim/requests"
MAX_BODY = 4 * 1024 * 1024  # far above MaxEnvelopeSize; refuses a runaway body
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


@dataclass
class HttpAnswer:
    """One HTTP response; ``drop`` sends half of it and then resets the connection."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False

    def encode(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}",
            "Server: Microsoft-HTTPAPI/2.0",
            f"Content-Length: {len(self.body)}",
        ]
        if self.content_type:
            lines.append(f"Content-Type: {self.content_type}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


# The simulator's one control (not part of WS-Management): the employee sitting at the machine
# connects the VPN themselves, with their own credentials and phone book, as the portal asks
# them to after a fix (issue #9). ``?name=`` picks the connection. Tests and demos call it.
CONNECT_PATH = "/sim/connect"


FAULT_PATH = "/sim/fault"  # ?drop_after_lines=N arms a fault at run time (tests)


AGENT_PATH = "/sim/agent"  # ?portal=URL&token=CODE installs the agent (as install.ps1 does)


def _set_fault(host: Host, path: str) -> HttpAnswer:
    for name, values in parse_qs(urlsplit(path).query).items():
        if name == "agent_offline":  # the PC is switched off or back on
            host.agent_offline = values[0] == "1"
            continue
        if name not in ("drop_after_lines", "slow_step_ms"):
            return HttpAnswer(400)
        setattr(host.faults, name, int(values[0]))
    return HttpAnswer(204)


def _employee_connects(host: Host, path: str) -> HttpAnswer:
    name = (parse_qs(urlsplit(path).query).get("name") or [None])[0]
    if host.is_down():
        return HttpAnswer(503)
    try:
        facts = dial_model.dial(host, name, as_employee=True)
    except LookupError as exc:
        facts = {"connected": False, "error_code": 623, "message": str(exc)}
    body = json.dumps(facts, ensure_ascii=False).encode("utf-8")
    return HttpAnswer(200, body, "application/json; charset=utf-8")


def _unauthorized(token: str | None = None, basic: bool = False) -> HttpAnswer:
    headers = [("WWW-Authenticate", f"Negotiate {token}" if token else "Negotiate")]
    if basic:
        headers.insert(0, ("WWW-Authenticate", 'Basic realm="WSMAN"'))
    return HttpAnswer(401, headers=headers)


@dataclass
class _Connection:
    """Per-connection state: the NTLM context authenticates (and seals) this connection only."""

    ntlm: auth.NtlmAcceptor | None = None
    authenticated: auth.NtlmAcceptor | None = None
    peer: str = "127.0.0.1"


class Fleet:
    """Serves a list of hosts, each on its own port, from one event loop."""

    def __init__(
        self,
        hosts: Iterable[Host],
        cert: tuple[Path, Path] | None = None,
        state_dir: Path | None = None,
        listen: str = "127.0.0.1",
    ) -> None:
        self.hosts = list(hosts)
        # Where the hosts listen: loopback, or 0.0.0.0 in a container that other containers
        # (the scaled workers of docker-compose.yml) reach by its name.
        self.listen = listen
        self._cert = cert
        self._state_dir = state_dir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._servers: list[asyncio.Server] = []
        self._idle_sockets: list[socket.socket] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._shells: dict[str, HostShells] = {}
        self._credentials: dict[str, Path] = {}
        # HTTP requests each host received (NTLM handshake legs included), by host name.
        self.requests: dict[str, int] = {host.name: 0 for host in self.hosts}
        self.agents: dict[str, Any] = {}  # host name -> its running winsim.agent.Agent
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind every host's port (0 = a free one, written back to ``host.port``) and listen.

        A host with ``faults.refuse_connections`` gets a bound socket that never listens, so a
        client's connect() is refused (ECONNREFUSED) while the port stays reserved.
        """
        self.loop = asyncio.get_running_loop()
        if self._state_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="winsim-")
            self._state_dir = Path(self._tempdir.name)
        ssl_context = None
        if any(host.scheme == "https" for host in self.hosts):
            cert = self._cert or tls.make_self_signed(self._state_dir)
            ssl_context = tls.server_context(*cert)
        for host in self.hosts:
            self._shells[host.name] = HostShells(host, self.loop)
            if host.scheme != "https":
                self._credentials[host.name] = auth.write_credential_file(host, self._state_dir)
            try:
                sock = _bind(self.listen, host.port)
            except OSError as err:
                raise OSError(
                    err.errno,
                    f"{host.name}: cannot listen on {self.listen}:{host.port}: {err.strerror}",
                ) from err
            host.port = sock.getsockname()[1]
            if host.faults.refuse_connections:
                self._idle_sockets.append(sock)
                continue
            sock.listen(128)
            server = await asyncio.start_server(
                lambda r, w, h=host: self._serve(h, r, w),
                sock=sock,
                ssl=ssl_context if host.scheme == "https" else None,
                limit=64 * 1024,
            )
            self._servers.append(server)

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        for agent in self.agents.values():
            agent.stop()
        for server in self._servers:
            server.close()
        for sock in self._idle_sockets:
            sock.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for shells in self._shells.values():
            for shell in list(shells.shells.values()):
                shells.delete(shell)
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def start_agent(self, host: Host, portal: str, token: str) -> None:
        """Install the agent on ``host``: it enrols with ``token`` and polls ``portal``."""
        from winsim.agent import Agent  # the agent half is a client; the server needs none

        old = self.agents.pop(host.name, None)
        if old is not None:
            old.stop()
        host.has_agent = True
        agent = Agent(host, portal, token)
        self.agents[host.name] = agent
        agent.start()

    def describe(self, host: Host) -> dict[str, str]:
        """The ``--print-json`` line for a host: how a client reaches it."""
        username = f"{host.domain}\\{host.username}" if host.domain else host.username
        return {
            "host": host.name,
            "url": f"{host.scheme}://127.0.0.1:{host.port}/wsman",
            "transport": "basic" if host.scheme == "https" else "ntlm",
            "username": username,
            "password": host.password,
        }

    # --- connections -------------------------------------------------------------------

    async def _serve(
        self, host: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if host.is_down() or host.faults.refuse_connections:
            _reset(writer)
            return
        self._writers.add(writer)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        conn = _Connection(peer=str(peer[0]))
        try:
            await self._serve_requests(host, conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Shutdown cancels idle connections; Python 3.11's start_server callback would log
            # a cancelled handler as an unhandled error, so it ends quietly here instead.
            pass
        finally:
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _serve_requests(
        self,
        host: Host,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection between requests
            method, path, headers = _parse_head(head)
            counter = method == "GET" and path == REQUESTS_PATH
            if not counter:
                self.requests[host.name] += 1
            if headers.get("transfer-encoding", "").lower() == "chunked":
                writer.write(HttpAnswer(411, headers=[("Connection", "close")]).encode())
                return
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_BODY:
                writer.write(HttpAnswer(413, headers=[("Connection", "close")]).encode())
                return
            body = await reader.readexactly(length) if length else b""
            if counter:  # unauthenticated and not counted itself: it tells nothing secret
                count = json.dumps({"host": host.name, "requests": self.requests[host.name]})
                writer.write(HttpAnswer(200, count.encode(), "application/json").encode())
                await writer.drain()
                continue
            if host.is_down() or (
                not host.winrm_reachable and not path.lower().startswith("/sim/")
            ):  # down, or at home: the portal's WinRM never gets through
                _reset(writer)
                return
            if host.faults.never_answer:
                continue  # read everything, answer nothing: the client's read times out
            try:
                answer = await self._answer(host, conn, method, path, headers, body)
            except Exception:  # noqa: BLE001 - a bug answers 500 rather than killing the fleet
                log.exception("winsim: %s: request failed", host.name)
                answer = HttpAnswer(500, headers=[("Connection", "close")])
                writer.write(answer.encode())
                return
            data = answer.encode()
            if answer.drop:
                writer.write(data[: len(data) // 2])
                await writer.drain()
                _reset(writer)
                return
            writer.write(data)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return

    async def _answer(
        self,
        host: Host,
        conn: _Connection,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> HttpAnswer:
        if path.split("?", 1)[0].lower() == CONNECT_PATH and method == "POST":
            return _employee_connects(host, path)
        if path.split("?", 1)[0].lower() == FAULT_PATH and method == "POST":
            return _set_fault(host, path)
        if path.split("?", 1)[0].lower() == AGENT_PATH and method == "GET":
            agent = self.agents.get(host.name)
            state = {
                "installed": agent is not None,
                "running": bool(agent and agent.is_alive()),
                "revoked": bool(agent and agent.revoked),
                "polls": agent.polls if agent else 0,
                "refused": list(agent.refused) if agent else [],
            }
            return HttpAnswer(200, json.dumps(state).encode(), "application/json")
        if path.split("?", 1)[0].lower() == AGENT_PATH and method == "POST":
            query = parse_qs(urlsplit(path).query)
            portal, token = (query.get("portal") or [""])[0], (query.get("token") or [""])[0]
            if not portal.startswith(("http://", "https://")) or not token:
                return HttpAnswer(400)
            self.start_agent(host, portal, token)
            return HttpAnswer(204)

        if path.split("?", 1)[0].lower() != "/wsman":
            return HttpAnswer(404)
        if method != "POST":
            return HttpAnswer(405)
        authorization = headers.get("authorization", "")
        if host.scheme == "https":
            if not auth.basic_ok(host, authorization):
                return _unauthorized(basic=True)
            status, xml, drop = await self._soap(host, body, conn.peer)
            return HttpAnswer(status, xml, SOAP_CONTENT_TYPE, drop=drop)
        return await self._answer_ntlm(host, conn, authorization, headers, body)

    async def _answer_ntlm(
        self,
        host: Host,
        conn: _Connection,
        authorization: str,
        headers: dict[str, str],
        body: bytes,
    ) -> HttpAnswer:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token:
            if conn.ntlm is None or conn.ntlm.complete:
                conn.ntlm = auth.NtlmAcceptor(self._credentials[host.name])
                conn.authenticated = None
            try:
                answer_token = conn.ntlm.step(token.strip())
            except auth.AuthFailed:
                conn.ntlm = None
                return _unauthorized()
            if not conn.ntlm.complete:
                return _unauthorized(answer_token)
            conn.authenticated = conn.ntlm
            if not body:
                return HttpAnswer(200)
        elif authorization:
            # Basic (or anything else) over plain HTTP: a default listener offers Negotiate only.
            return _unauthorized()
        if conn.authenticated is None:
            return _unauthorized()
        if "multipart/encrypted" not in headers.get("content-type", ""):
            # AllowUnencrypted=false: plaintext SOAP on HTTP is rejected.
            return _unauthorized()
        try:
            plain = conn.authenticated.unwrap(body)
        except ValueError:
            return HttpAnswer(400)
        status, xml, drop = await self._soap(host, plain, conn.peer)
        return HttpAnswer(
            status, conn.authenticated.wrap(xml), auth.ENCRYPTED_CONTENT_TYPE, drop=drop
        )

    # --- WS-Management -----------------------------------------------------------------

    async def _soap(self, host: Host, data: bytes, peer: str) -> tuple[int, bytes, bool]:
        """Answer one SOAP request: (HTTP status, envelope, drop-the-connection?)."""
        message_id = ""
        try:
            req = wsman.parse_request(data)
            message_id = req.message_id
            if req.resource_uri != wsman.SHELL_CMD_URI:
                raise wsman.action_not_supported(req.action)
            xml, drop = await self._operation(host, req, peer)
            return 200, xml, drop
        except wsman.WsmanFault as fault:
            return 500, wsman.fault_response(fault, message_id, host.computer_name), False

    async def _operation(self, host: Host, req: wsman.Request, peer: str) -> tuple[bytes, bool]:
        shells = self._shells[host.name]
        if req.action == wsman.ACTION_CREATE:
            if wsman.find_body_child(req, "Shell") is None and (
                req.body is None or req.body.find(f"{{{wsman.NS['rsp']}}}Shell") is None
            ):
                raise wsman.missing_element("Shell")
            codepage = _codepage(req.options.get("WINRS_CODEPAGE", ""), host)
            shell = shells.create(codepage)
            address = f"{host.scheme}://127.0.0.1:{host.port}/wsman"
            owner = f"{host.domain or host.computer_name}\\{host.username}"
            return wsman.create_response(req, shell.id, address, owner, peer), False
        shell = _shell_for(shells, req)
        if req.action == wsman.ACTION_DELETE:
            shells.delete(shell)
            return wsman.delete_response(req), False
        if req.action == wsman.ACTION_COMMAND:
            return wsman.command_response(req, _start_command(shells, shell, req).id), False
        if req.action == wsman.ACTION_SEND:
            stream = wsman.find_body_child(req, "Stream")
            if stream is None:
                raise wsman.missing_element("Stream")
            command = _command_for(shell, stream.get("CommandId", ""))
            try:
                import base64

                data = base64.b64decode((stream.text or "").strip(), validate=True)
            except ValueError as err:
                raise wsman.invalid_parameter() from err
            command.feed_stdin(data, stream.get("End", "false").lower() == "true")
            return wsman.send_response(req), False
        if req.action == wsman.ACTION_RECEIVE:
            desired = wsman.find_body_child(req, "DesiredStream")
            if desired is None:
                raise wsman.missing_element("DesiredStream")
            command = _command_for(shell, desired.get("CommandId", ""))
            return await _receive(host, req, command)
        if req.action == wsman.ACTION_SIGNAL:
            signal = wsman.find_body_child(req, "Signal")
            if signal is None:
                raise wsman.missing_element("Signal")
            command = _command_for(shell, signal.get("CommandId", ""))
            shells.signal_terminate(shell, command)
            return wsman.signal_response(req), False
        raise wsman.action_not_supported(req.action)


async def _receive(host: Host, req: wsman.Request, command: Command) -> tuple[bytes, bool]:
    """Answer with whatever output is ready; wait up to OperationTimeout for some first."""
    if not command.has_news():
        try:
            await asyncio.wait_for(command.changed.wait(), timeout=req.operation_timeout)
        except TimeoutError:
            raise wsman.timed_out() from None
    out, err, exit_code = command.take()
    drop = host.faults.drop_in_receive and bool(out or err)
    limit = host.faults.drop_after_lines
    if limit and out:
        # One shot: hand over the first ``limit`` lines, then lose the connection while the
        # command runs on, as a Windows command outlives its HTTP connection.
        allowed = limit - command.lines_sent
        if allowed <= 0:
            host.faults.drop_after_lines = 0
            command.stdout[:0] = out  # never delivered: it stays in the (lost) stream
            return wsman.receive_response(req, command.id, b"", b"", None), True
        lines = out.split(b"\n")
        if len(lines) - 1 > allowed:
            keep = b"\n".join(lines[:allowed]) + b"\n"
            command.stdout[:0] = out[len(keep) :]
            out, exit_code = keep, None
        command.lines_sent += out.count(b"\n")
    return wsman.receive_response(req, command.id, out, err, exit_code), drop


def _start_command(shells: HostShells, shell: Shell, req: wsman.Request) -> Command:
    line = wsman.find_body_child(req, "CommandLine")
    if line is None:
        raise wsman.missing_element("CommandLine")
    command = line.find(f"{{{wsman.NS['rsp']}}}Command")
    if command is None or not (command.text or "").strip():
        raise wsman.missing_element("Command")
    arguments = [a.text or "" for a in line.findall(f"{{{wsman.NS['rsp']}}}Arguments")]
    # Not stripped: cmd.exe counts every character of the line against its 8191 limit.
    command_line = " ".join([command.text or "", *arguments])
    return shells.start(shell, command_line)


def _shell_for(shells: HostShells, req: wsman.Request) -> Shell:
    if not req.shell_id:
        raise wsman.WsmanFault(
            2150858843,
            "w:InvalidSelectors",
            "The Windows Remote Shell cannot process the request because it requires the "
            "following selector: ShellId. Retry with the correct selector.",
        )
    shell = shells.shells.get(req.shell_id.upper())
    if shell is None:
        raise wsman.shell_not_found(req.shell_id)
    return shell


def _command_for(shell: Shell, command_id: str) -> Command:
    command = shell.commands.get(command_id.upper())
    if command is None:
        raise wsman.command_not_found(command_id)
    return command


def _codepage(text: str, host: Host) -> int:
    if not text:
        # Without WINRS_CODEPAGE the shell uses the host's OEM code page.
        return 932 if host.locale == "ja-JP" else 437
    try:
        value = int(text)
    except ValueError:
        raise wsman.invalid_parameter() from None
    if value <= 0:
        raise wsman.invalid_parameter()
    return value


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method.upper(), path, headers


def _bind(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a host that is rebooting or dies mid-answer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def requests_received(wsman_url: str, timeout: float = 5.0) -> int:
    """How many HTTP requests the winsim host at ``wsman_url`` has received so far.

    For tests and benches in another process: a client's requests counted where they arrive,
    the client left as it is.
    """
    parts = urlsplit(wsman_url)
    url = f"{parts.scheme}://{parts.netloc}{REQUESTS_PATH}"
    # winsim's HTTPS hosts use a self-signed certificate: the count is no secret.
    context = ssl._create_unverified_context() if parts.scheme == "https" else None  # noqa: S323
    with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310
        return int(json.load(answer)["requests"])


class FleetThread:
    """A fleet on its own event-loop thread, for tests and tools in another program.

    ``start()`` returns once every host listens (ports written back into the hosts);
    ``stop()`` shuts it down. Usable as a context manager.
    """

    def __init__(self, hosts: Iterable[Host], cert: tuple[Path, Path] | None = None) -> None:
        self.fleet = Fleet(hosts, cert=cert)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="winsim", daemon=True)

    def start(self) -> FleetThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(timeout=60)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FleetThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
