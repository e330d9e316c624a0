"""`make run`'s supervisor (scripts/run.py) stopped the ways a person stops it. Real processes."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from scripts.services import Service, wait_until
from tests.conftest import ROOT, demo_env, wait_for_demo

pytestmark = pytest.mark.integration


def start_demo(directory: Path) -> Service:
    run = Service("run", [sys.executable, "scripts/run.py"], env=demo_env(directory), cwd=ROOT)
    wait_for_demo(run.start())
    return run


def started_pids(run: Service) -> list[int]:
    """The children run.py named while stopping them ("run: stopping web (pid 123)")."""
    found = (re.search(r"^run: stopping \w+ \(pid (\d+)\)$", line) for line in run.lines())
    return [int(match.group(1)) for match in found if match]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def assert_stopped_cleanly(run: Service) -> None:
    assert run.wait(30) == 0
    lines = run.lines()
    assert lines[-1] == "run: stopped"
    assert not [line for line in lines if "Traceback" in line]
    pids = started_pids(run)
    assert len(pids) == 4  # web, worker, winsim and the private Redis
    assert "run: started a private Redis at " in "\n".join(lines)
    assert wait_until(lambda: all(gone(pid) for pid in pids), 5)


def test_one_ctrl_c_stops_everything_and_exits_0(tmp_path):
    run = start_demo(tmp_path)
    try:
        os.kill(run.pid, signal.SIGINT)  # what Ctrl-C sends
        assert_stopped_cleanly(run)
        assert "run: stop requested" in run.lines()
    finally:
        run.stop()


def test_sigterm_again_and_again_to_the_process_group_stops_everything_gracefully(tmp_path):
    run = start_demo(tmp_path)
    try:
        # make forwards the SIGTERM its group got, so the same stop arrives at least twice;
        # a burst of them must neither interrupt the cleanup nor turn into a SIGKILL.
        for _ in range(20):
            os.killpg(run.pid, signal.SIGTERM)
            time.sleep(0.005)
        assert_stopped_cleanly(run)
        assert any("Finished server process" in line for line in run.lines())  # uvicorn's own
    finally:
        run.stop()
