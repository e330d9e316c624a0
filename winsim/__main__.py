"""``python -m winsim --profile FILE [--print-json]``: serve a simulated Windows fleet.

Every host of the profile listens on its own 127.0.0.1 port. With ``--print-json`` one JSON
line per host goes to stdout once all hosts listen (then stdout is flushed), so a test or a
script can read the ports. SIGTERM or Ctrl-C stops the fleet cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import yaml

from winsim.hosts import load_profile
from winsim.server import Fleet


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m winsim", description="Serve a simulated Windows fleet over WinRM."
    )
    parser.add_argument("--profile", required=True, help="YAML profile of the hosts to serve")
    parser.add_argument(
        "--print-json",
        action="store_true",
        help="print one JSON line per host (name, url, transport, credentials) once listening",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        help="address the hosts listen on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    parser.add_argument("--cert", help="PEM certificate for HTTPS hosts (default: self-signed)")
    parser.add_argument("--key", help="PEM private key matching --cert")
    parser.add_argument(
        "--portal", help="portal URL the hosts' agents enrol with and poll (with --agent-token)"
    )
    parser.add_argument(
        "--agent-token",
        action="append",
        default=[],
        metavar="HOST=CODE",
        help="install the agent on HOST with this one-time enrolment code (repeatable)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    hosts = load_profile(args.profile)
    cert = (Path(args.cert), Path(args.key)) if args.cert and args.key else None
    fleet = Fleet(hosts, cert=cert, listen=args.listen)
    await fleet.start()
    by_name = {host.name: host for host in fleet.hosts}
    for item in args.agent_token:
        name, _eq, code = item.partition("=")
        if name not in by_name or not code or not args.portal:
            raise ValueError(f"--agent-token {name}: needs --portal, a host of the profile, a code")
        fleet.start_agent(by_name[name], args.portal, code)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.print_json:
        for host in fleet.hosts:
            sys.stdout.write(json.dumps(fleet.describe(host)) + "\n")
    else:
        for host in fleet.hosts:
            info = fleet.describe(host)
            sys.stdout.write(f"{info['host']:<28} {info['url']}  ({info['transport']})\n")
    sys.stdout.flush()
    await stop.wait()
    await fleet.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the fleet until SIGTERM/Ctrl-C; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"winsim: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
