"""README.md's commands, run as written against a started demo, so the README cannot drift.

Every line of every ```sh block is a command. A block that uses Docker is left out (there is
no Docker here; its `cp .env.example .env` would also overwrite a person's .env). `make run`
is the demo itself, started from its README line; `make test` is this suite. Every other
command runs in a shell the way a second terminal runs it: in the checkout, with none of the
demo's settings exported (only KAIKETSU_DEMO_ENV, so this demo's settings file is not a
person's var/demo.env), and must exit 0 with the output its EXPECTATIONS entry checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest

from scripts.services import Service
from tests.conftest import ROOT, demo_env, wait_for_demo

pytestmark = pytest.mark.integration

SEED = "l2tp-ipsec-psk-negotiation"


def readme_commands() -> list[str]:
    """The command lines of README.md's sh blocks, in order, except the Docker blocks'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        lines = [line.strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not any(line.split()[0] == "docker" for line in lines):
            commands += lines
    return commands


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _best_article(out: str) -> None:
    assert _json(out)["matches"][0]["article"] == SEED


def _problems_found(out: str) -> None:
    assert re.search(r"^job \d+ \(diagnose\): done / problems$", out, flags=re.MULTILINE), out


def _healthy(out: str) -> None:
    result = _json(out)
    assert (result["status"], result["outcome"]) == ("done", "healthy"), result


# (pattern a README command must match, what its output must show); None: not run here.
EXPECTATIONS: list[tuple[str, Callable[[str], None] | None]] = [
    (r"^make run\b", None),  # the demo: the `demo` fixture runs this very line
    (r"^make test\b", None),  # this suite
    (r"manage\.py kb_match .* --json$", _best_article),
    (r"manage\.py diagnose --machine demo-nat-t --article l2tp\S+$", _problems_found),
    (r"manage\.py diagnose --machine demo-healthy --article l2tp\S+ --json$", _healthy),
]


def expectation(command: str) -> Callable[[str], None] | None:
    found = [check for pattern, check in EXPECTATIONS if re.search(pattern, command)]
    assert len(found) == 1, f"README command without exactly one expectation here: {command}"
    return found[0]


def test_every_readme_command_has_exactly_one_expectation():
    commands = readme_commands()
    assert any(command.startswith("make run") for command in commands)
    for command in commands:
        expectation(command)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The README's own `make run` line, run in a shell; yields the second terminal's env."""
    directory = tmp_path_factory.mktemp("demo")
    env = demo_env(directory)
    line = next(command for command in readme_commands() if command.startswith("make run"))
    run = Service("make-run", ["bash", "-c", line], env=env, cwd=ROOT).start()
    wait_for_demo(run)
    yield {name: env[name] for name in ("PATH", "HOME", "LANG", "KAIKETSU_DEMO_ENV")}
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in its terminal: make and run.py both get it
    run.wait(30)
    run.stop()


RUNNABLE = [c for c in readme_commands() if not re.match(r"make (run|test)\b", c)]


@pytest.mark.parametrize("command", RUNNABLE, ids=[f"line{i}" for i in range(len(RUNNABLE))])
def test_readme_command_works_as_written_from_a_second_terminal(demo, command):
    check = expectation(command)
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=demo, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    check(done.stdout)
