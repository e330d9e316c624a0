"""Fixtures that serve winsim hosts over real sockets, in this process or in a subprocess."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from winrm.protocol import Protocol

from scripts.services import Service
from tests.conftest import start_winsim
from winsim.hosts import Host, hosts_from_profile, load_profile
from winsim.server import FleetThread

ROOT = Path(__file__).resolve().parents[2]
PROFILE = Path(__file__).with_name("protocol_profile.yaml")
BOOTSTRAP = (
    "# kaiketsu-bootstrap v1\n"
    "$ProgressPreference = 'SilentlyContinue'\n"
    "$lines = @($input)\n"
    "& ([ScriptBlock]::Create($lines[0])) -PlanJson $lines[1]\n"
)
STRONG_POLICY = {
    "authentication_transform_constants": "SHA196",
    "cipher_transform_constants": "AES256",
    "encryption_method": "AES256",
    "integrity_check_method": "SHA256",
    "dh_group": "Group14",
    "pfs_group": "None",
}
RUNNER = "param([string]$PlanJson)\n$plan = $PlanJson | ConvertFrom-Json\n"


class Fleet:
    """The test fleet: hosts by name, and a pywinrm Protocol for any of them."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = {host.name: host for host in hosts}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def protocol(self, name: str, **kwargs: Any) -> Protocol:
        """Stock pywinrm for a host: NTLM (encrypted) over HTTP, Basic over HTTPS."""
        host = self.hosts[name]
        options: dict[str, Any] = {
            "transport": "ssl" if host.scheme == "https" else "ntlm",
            "username": f"{host.domain}\\{host.username}" if host.domain else host.username,
            "password": host.password,
            "server_cert_validation": "ignore",
            "operation_timeout_sec": 2,
            "read_timeout_sec": 4,
        }
        options.update(kwargs)
        return Protocol(f"{host.scheme}://127.0.0.1:{host.port}/wsman", **options)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """Every host of tests/winsim/protocol_profile.yaml, served in this process on free ports."""
    hosts = load_profile(PROFILE)
    with FleetThread(hosts):
        yield Fleet(hosts)


def make_host(spec: dict[str, Any] | None = None) -> Host:
    """One host from a profile entry on top of the built-in healthy defaults."""
    return hosts_from_profile({"hosts": {"h": spec or {}}})[0]


def plan(*kinds: str) -> dict[str, Any]:
    """A plan with one argument-less step per kind."""
    steps = [{"id": f"s{i}", "kind": kind, "args": {}} for i, kind in enumerate(kinds, 1)]
    return {"version": 1, "job": "t", "steps": steps}


def bootstrap_command(bootstrap: str = BOOTSTRAP) -> str:
    """The command line the portal sends: powershell with the bootstrap as -EncodedCommand."""
    encoded = base64.b64encode(bootstrap.encode("utf-16-le")).decode("ascii")
    return (
        f"powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {encoded}"
    )


def runner_stdin(plan_data: dict[str, Any], runner: str = RUNNER) -> bytes:
    """stdin of the runner protocol: base64 runner line, base64 plan line."""
    lines = [
        base64.b64encode(runner.encode("utf-8")).decode("ascii"),
        base64.b64encode(json.dumps(plan_data).encode("utf-8")).decode("ascii"),
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def start_runner(
    protocol: Protocol,
    plan_data: dict[str, Any],
    *,
    bootstrap: str = BOOTSTRAP,
    runner: str = RUNNER,
    codepage: int = 65001,
) -> tuple[str, str]:
    """Open a shell, start the bootstrap and write runner + plan on stdin; (shell, command)."""
    shell_id = protocol.open_shell(codepage=codepage, noprofile=True)
    command_id = protocol.run_command(shell_id, bootstrap_command(bootstrap))
    protocol.send_command_input(shell_id, command_id, runner_stdin(plan_data, runner), end=True)
    return shell_id, command_id


def run_runner(
    protocol: Protocol, plan_data: dict[str, Any], **kwargs: Any
) -> tuple[bytes, bytes, int]:
    """Run a plan to the end: (stdout, stderr, exit code)."""
    shell_id, command_id = start_runner(protocol, plan_data, **kwargs)
    result = protocol.get_command_output(shell_id, command_id)
    protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)
    return result


def start_fleet_process(profile: Path) -> tuple[Service, list[dict[str, str]]]:
    """``python -m winsim --profile FILE --print-json`` and the JSON lines it printed."""
    proc, hosts = start_winsim(profile)
    return proc, list(hosts.values())
