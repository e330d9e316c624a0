"""Figures for winsim's WinRM side: request rate of one host, memory and start-up of 500 hosts.

Run: ``.venv/bin/python bench/winsim_bench.py [--seconds 3] [--hosts 500]``.
Everything goes through stock pywinrm (NTLM with message encryption over HTTP) against
``python -m winsim`` in a subprocess, so the client's cost is part of the figure, as it is for
the portal's worker.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from winrm.protocol import Protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.services import Service, start_winsim  # noqa: E402


def start_fleet(profile: Path) -> tuple[Service, list[dict], float]:
    """Start ``python -m winsim --print-json``; (service, host lines, seconds until all listen)."""
    started = time.monotonic()
    fleet, hosts = start_winsim(profile, {**os.environ, "PYTHONPATH": str(ROOT)})
    return fleet, list(hosts.values()), time.monotonic() - started


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def protocol_for(info: dict) -> Protocol:
    return Protocol(
        info["url"],
        transport="ntlm",
        username=info["username"],
        password=info["password"],
        operation_timeout_sec=5,
        read_timeout_sec=10,
    )


def receive_rate(info: dict, seconds: float) -> float:
    """Encrypted Receive round trips per second on one kept-alive, authenticated connection."""
    p = protocol_for(info)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "hostname")
    p.get_command_output(shell_id, command_id)
    count, deadline = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        p.get_command_output_raw(shell_id, command_id)  # a finished command answers at once
        count += 1
    elapsed = time.monotonic() - started
    p.close_shell(shell_id)
    return count / elapsed


def cycle_rate(info: dict, seconds: float) -> float:
    """Full open-shell / run / receive / signal / close cycles per second on one connection."""
    p = protocol_for(info)
    count, deadline = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        shell_id = p.open_shell(codepage=65001)
        command_id = p.run_command(shell_id, "hostname")
        p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id, close_session=False)
        count += 1
    return count / (time.monotonic() - started)


def touch_all(hosts: list[dict]) -> float:
    """One anonymous POST to every host (answered 401); seconds taken."""
    started = time.monotonic()
    for info in hosts:
        port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            sock.recv(256)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each rate run")
    parser.add_argument("--hosts", type=int, default=500, help="fleet size for memory/start-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.yaml"
        one.write_text("hosts:\n  bench-one: {locale: en-US}\n", encoding="utf-8")
        fleet, hosts, _ = start_fleet(one)
        try:
            print(
                f"receive round trips/s (NTLM-encrypted, one connection): {receive_rate(hosts[0], args.seconds):.0f}"
            )
            print(
                f"open/run/receive/close cycles/s (one connection):       {cycle_rate(hosts[0], args.seconds):.0f}"
            )
        finally:
            fleet.stop()

        many = Path(tmp) / "many.yaml"
        many.write_text(f"generate:\n  - {{count: {args.hosts}, prefix: pc-}}\n", encoding="utf-8")
        fleet, hosts, startup = start_fleet(many)
        try:
            print(f"start-up, {args.hosts} hosts listening:                    {startup:.2f} s")
            print(
                f"RSS, {args.hosts} hosts idle:                              {rss_mib(fleet.pid):.1f} MiB"
            )
            took = touch_all(hosts)
            print(f"one request to each of {args.hosts} hosts:                 {took:.2f} s")
            print(
                f"RSS, {args.hosts} hosts after one request each:            {rss_mib(fleet.pid):.1f} MiB"
            )
        finally:
            code = fleet.stop()  # SIGTERM, SIGKILL only after 10 s
            print(f"SIGTERM -> exit code {code}")


if __name__ == "__main__":
    main()
