"""diagnostics.remote: stock pywinrm against a real winsim fleet over sockets.

The fleet is tests/data/remote.yaml, served by ``python -m winsim`` in its own process (so its
timing is not shared with the client's interpreter). Pure helpers (line splitting, bounds,
CLIXML) are tested directly below the WinRM tests.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from winrm.protocol import Protocol

from diagnostics import remote
from diagnostics.remote import (
    MAX_LINE_BYTES,
    RemoteError,
    Target,
    _Bounded,
    _LineSplitter,
    build_command,
    clean_stderr,
    run_plan,
)
from diagnostics.remote import test_connection as connect_and_hostname
from tests.conftest import start_winsim
from winsim.server import requests_received

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "tests" / "data" / "remote.yaml"

PLAN = {
    "version": 1,
    "job": "t1",
    "steps": [
        {"id": "s1", "kind": "os_info", "args": {}},
        {"id": "s2", "kind": "service", "args": {"name": "PolicyAgent"}},
        {"id": "s3", "kind": "vpn_connection", "args": {"name": "社内VPN"}},
        {
            "id": "s4",
            "kind": "registry_value",
            "args": {
                "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
                "name": "AssumeUDPEncapsulationContextOnSendRule",
            },
        },
    ],
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, dict]]:
    """name -> the --print-json line of each host of tests/data/remote.yaml."""
    fleet, hosts = start_winsim(PROFILE)
    yield hosts
    fleet.stop()


def target(fleet: dict[str, dict], name: str, **changes) -> Target:
    info = fleet[name]
    url = urlsplit(info["url"])
    fields = {
        "name": name,
        "address": url.hostname,
        "port": url.port,
        "scheme": url.scheme,
        "username": info["username"],
        "password": info["password"],
        "verify_tls": False,
    }
    fields.update(changes)
    return Target(**fields)


class Recorder:
    """on_line callback that notes when each line arrived."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.times: list[float] = []

    def __call__(self, line: dict) -> None:
        self.lines.append(line)
        self.times.append(time.monotonic())

    def steps(self) -> dict[str, dict]:
        return {line["step"]: line for line in self.lines if "step" in line}


# --- against winsim ---------------------------------------------------------------------------


def test_plan_runs_and_every_step_line_reaches_on_line(fleet) -> None:
    rec = Recorder()
    before = requests_received(fleet["remote-ok"]["url"])
    outcome = run_plan(target(fleet, "remote-ok"), PLAN, rec)
    sent = requests_received(fleet["remote-ok"]["url"]) - before
    assert outcome.exit_code == 0 and outcome.complete
    assert list(rec.steps()) == ["s1", "s2", "s3", "s4"]
    assert rec.lines[-1] == {"end": True, "steps": 4}
    assert rec.steps()["s2"]["facts"]["name"] == "PolicyAgent"
    assert outcome.garbage == [] and outcome.stderr == ""
    assert '"step": "s1"' in outcome.transcript or '"step":"s1"' in outcome.transcript
    # One command per job: NTLM handshake (3), Create, Command, Send, Receive(s), Delete.
    assert 8 <= sent <= 20


def test_lines_stream_to_on_line_before_the_command_ends(fleet) -> None:
    rec = Recorder()
    started = time.monotonic()
    run_plan(target(fleet, "remote-slow"), PLAN, rec, operation_timeout_s=2)
    finished = time.monotonic()
    # 4 steps of 400 ms: the first line must be in hand while three steps still run.
    assert rec.times[0] - started < (finished - started) - 0.8
    assert rec.times[-1] - rec.times[0] > 0.8


def test_codepage_65001_keeps_japanese_facts_intact(fleet) -> None:
    rec = Recorder()
    run_plan(target(fleet, "remote-ok"), PLAN, rec)
    assert rec.steps()["s1"]["facts"]["computer_name"] == "経理-PC01"
    assert rec.steps()["s3"]["facts"]["name"] == "社内VPN"
    assert connect_and_hostname(target(fleet, "remote-ok")) == "経理-PC01"


def test_default_codepage_437_would_have_mangled_the_japanese_hostname(fleet) -> None:
    # The control for the test above: pywinrm's default code page loses the characters.
    t = target(fleet, "remote-ok")
    p = Protocol(
        t.endpoint, transport="ntlm", username=t.username, password=t.password, ca_trust_path=None
    )
    shell = p.open_shell()
    try:
        cmd = p.run_command(shell, "hostname")
        out, _, _ = p.get_command_output(shell, cmd)
    finally:
        p.close_shell(shell)
    assert "経理" not in out.decode("utf-8", "replace") and b"?" in out


def test_https_with_verification_off_runs_the_plan(fleet) -> None:
    rec = Recorder()
    outcome = run_plan(target(fleet, "remote-https", verify_tls=False), PLAN, rec)
    assert outcome.complete and len(rec.steps()) == 4


def test_https_self_signed_certificate_is_a_tls_error_when_verified(fleet) -> None:
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-https", verify_tls=True), PLAN, Recorder())
    assert err.value.kind == "tls" and "remote-https" in str(err.value)


def test_refused_connection_names_the_machine(fleet) -> None:
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-refused"), PLAN, Recorder())
    assert err.value.kind == "refused"
    assert "remote-refused" in str(err.value)


def test_host_that_never_answers_times_out_quickly(fleet) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-hang"), PLAN, Recorder(), operation_timeout_s=1)
    assert err.value.kind == "timeout" and "remote-hang" in str(err.value)
    assert time.monotonic() - started < 8


def test_deadline_terminates_the_command_and_keeps_delivered_lines(fleet) -> None:
    rec = Recorder()
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-slow"), PLAN, rec, deadline_s=1.0, operation_timeout_s=1)
    assert err.value.kind == "timeout"
    assert 1 <= len(rec.steps()) < 4
    assert err.value.outcome is not None and not err.value.outcome.complete


def test_connection_dropped_mid_receive_is_a_protocol_error_naming_the_machine(fleet) -> None:
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-drop"), PLAN, Recorder(), operation_timeout_s=1)
    assert err.value.kind == "protocol"
    assert "remote-drop" in str(err.value) and "dropped" in str(err.value)


def test_wrong_password_is_an_auth_error_without_the_password(fleet) -> None:
    bad = "Wrong-Password-9?"
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-ok", password=bad), PLAN, Recorder())
    assert err.value.kind == "auth"
    assert "remote-ok" in str(err.value)
    assert bad not in str(err.value) and bad not in repr(err.value)


def test_garbage_line_is_kept_aside_and_the_plan_still_completes(fleet) -> None:
    rec = Recorder()
    outcome = run_plan(target(fleet, "remote-garbage"), PLAN, rec)
    assert outcome.complete and len(rec.steps()) == 4
    assert len(outcome.garbage) == 1 and outcome.garbage[0].startswith("@{")


def test_non_zero_exit_is_an_error_after_the_lines_were_delivered(fleet) -> None:
    rec = Recorder()
    with pytest.raises(RemoteError) as err:
        run_plan(target(fleet, "remote-exit"), PLAN, rec)
    assert err.value.kind == "exit" and "code 3" in str(err.value)
    assert "remote-exit" in str(err.value)
    assert len(rec.steps()) == 4 and err.value.outcome.exit_code == 3


def test_clixml_progress_on_stderr_is_not_an_error(fleet, monkeypatch) -> None:
    # A bootstrap that forgets $ProgressPreference makes powershell.exe (and winsim) write
    # a CLIXML progress record to stderr; the run must still succeed with clean stderr.
    original = remote._script

    def noisy(name: str) -> str:
        text = original(name)
        if name == "bootstrap.ps1":
            text = text.replace("$ProgressPreference = 'SilentlyContinue'\n", "")
        return text

    monkeypatch.setattr(remote, "_script", noisy)
    command, _ = build_command(PLAN)
    script = base64.b64decode(command.rsplit(" ", 1)[1]).decode("utf-16-le")
    assert "ProgressPreference" not in script
    rec = Recorder()
    outcome = run_plan(target(fleet, "remote-ok"), PLAN, rec)
    assert outcome.exit_code == 0 and outcome.complete
    assert "CLIXML" not in outcome.stderr and "progress" not in outcome.stderr.lower()


def test_connection_test_answers_the_computer_name(fleet) -> None:
    assert connect_and_hostname(target(fleet, "remote-https")) == "REMOTE-HTTPS"


def test_target_repr_never_shows_credentials() -> None:
    t = Target("pc", "127.0.0.1", 5985, "http", "admin", "S3cret!")
    assert "S3cret!" not in repr(t) and "admin" not in repr(t)


# --- pure helpers ---------------------------------------------------------------------------


def test_splitter_joins_a_line_split_across_receives() -> None:
    rec = Recorder()
    splitter = _LineSplitter(rec)
    splitter.feed(b'\xef\xbb\xbf{"step": "s1", "ok": tr')
    assert rec.lines == []
    splitter.feed(b'ue, "facts": {"name": "\xe7\xa4\xbe"}}\r\n{"end": true, "steps": 1}\r\n')
    assert rec.lines == [
        {"step": "s1", "ok": True, "facts": {"name": "社"}},
        {"end": True, "steps": 1},
    ]
    assert splitter.complete


def test_splitter_treats_an_over_long_line_as_garbage_without_keeping_it() -> None:
    rec = Recorder()
    splitter = _LineSplitter(rec)
    for _ in range(3):
        splitter.feed(b"x" * (MAX_LINE_BYTES // 2))
    splitter.feed(b'\n{"end": true, "steps": 0}\n')
    assert len(splitter.pending) == 0
    assert splitter.garbage == ["x" * 200]
    assert rec.lines == [{"end": True, "steps": 0}]


def test_splitter_keeps_at_most_twenty_garbage_lines_cut_to_200_chars() -> None:
    splitter = _LineSplitter(Recorder())
    splitter.feed(("not json " * 50 + "\n").encode() * 30 + b"[1, 2]\n")
    assert len(splitter.garbage) == 20 and all(len(g) == 200 for g in splitter.garbage)


def test_transcript_keeps_head_and_tail_and_says_what_was_cut() -> None:
    bounded = _Bounded(10)
    bounded.add(b"0123456789abc")
    bounded.add(b"defghijklmnopqrstuvwxyz")
    text = bounded.text()
    assert text.startswith("0123456789") and text.endswith("qrstuvwxyz")
    assert "[... 16 bytes cut ...]" in text


def test_clixml_error_text_is_kept_and_progress_dropped() -> None:
    data = (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
        '</TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV>'
        "</PR></MS></Obj>"
        '<S S="Error">Get-Thing : 見つかりません &amp; more_x000D__x000A_</S></Objs>'
    ).encode()
    assert clean_stderr(data) == "Get-Thing : 見つかりません & more"
    assert clean_stderr(b"plain text\r\n") == "plain text\r\n"
