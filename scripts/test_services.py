"""Tests of scripts/services.py against real processes: redis-server, sh, sleep. No mocks."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from services import (  # noqa: E402
    Service,
    ServiceError,
    ensure_redis,
    free_port,
    port_answers,
    redis_answers,
    start_private_redis,
    start_winsim,
    wait_for_worker,
    wait_until,
)


@pytest.fixture
def private_redis(tmp_path: Path):
    url, service = start_private_redis("redis://127.0.0.1:6379/2", data_root=tmp_path)
    yield url, service
    service.stop()


def test_ensure_redis_reuses_a_redis_that_answers_and_returns_no_handle(private_redis):
    url, _ = private_redis
    assert ensure_redis(url) == (url, None)


def test_ensure_redis_starts_a_private_redis_when_nothing_answers(tmp_path: Path):
    silent = f"redis://127.0.0.1:{free_port()}/3"
    url, handle = ensure_redis(silent, data_root=tmp_path)
    try:
        assert handle is not None
        assert url != silent and url.endswith("/3")  # same database number, another port
        assert redis_answers(url)
    finally:
        handle.stop()
    assert not redis_answers(url)
    assert list(tmp_path.iterdir()) == []  # its data directory went with it


def test_stop_ends_the_children_of_a_service_too(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    # The shell starts a grandchild and waits: stopping must not orphan the grandchild.
    service = Service("sh", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]).start()
    assert wait_until(pid_file.exists, 5)
    assert wait_until(lambda: pid_file.read_text().strip() != "", 5)
    grandchild = int(pid_file.read_text())
    service.stop(timeout=5)

    def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        # A killed child of an exited shell may linger as a zombie until reaped by init.
        status = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        return status == "Z"

    assert wait_until(gone, 5)


def test_wait_for_line_finds_a_line_printed_before_the_wait_and_one_printed_after():
    argv = ["sh", "-c", "echo first; sleep 0.3; echo second; sleep 60"]
    service = Service("sh", argv).start()
    try:
        assert service.wait_for_line(r"^second$", 5) is not None
        assert service.wait_for_line(r"^first$", 1) is not None  # already printed: still found
        assert service.wait_for_line(r"^never$", 0.2) is None
    finally:
        service.stop(timeout=2)


def test_wait_for_line_gives_up_when_the_process_exits():
    service = Service("true", ["true"]).start()
    assert service.wait_for_line("anything", 5) is None
    assert wait_until(lambda: service.poll() == 0, 5)


def test_start_winsim_returns_every_host_of_the_profile_once_all_listen(tmp_path: Path):
    profile = tmp_path / "two.yaml"
    profile.write_text("hosts:\n  pc-a: {port: 0}\n  pc-b: {port: 0}\n", encoding="utf-8")
    fleet, hosts = start_winsim(profile)
    try:
        assert sorted(hosts) == ["pc-a", "pc-b"]
        port = int(hosts["pc-b"]["url"].rsplit(":", 1)[1].split("/")[0])
        assert port_answers("127.0.0.1", port)
    finally:
        assert fleet.stop() == 0  # SIGTERM: winsim stops cleanly


def test_free_port_is_below_the_ephemeral_range_and_free():
    # An outgoing connection takes its local port from the ephemeral range: a demo's port
    # chosen there could be gone before its server binds it (CI: "Address already in use").
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports), ports
    assert len(ports) > 1  # not one fixed port


def test_winsim_names_the_host_and_port_it_cannot_listen_on(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        profile = tmp_path / "clash.yaml"
        profile.write_text(f"hosts:\n  pc-a: {{port: 0}}\n  pc-b: {{port: {port}}}\n")
        with pytest.raises(ServiceError, match=rf"pc-b: cannot listen on 127\.0\.0\.1:{port}"):
            start_winsim(profile, timeout=30)


def test_a_service_that_never_gets_ready_is_stopped_and_its_last_lines_reported():
    sh = Service("sh", ["sh", "-c", "echo starting up; sleep 60"]).start()
    with pytest.raises(ServiceError, match=r"(?s)did not report ready.*starting up"):
        wait_for_worker(sh, timeout=0.5)
    assert sh.poll() is not None
