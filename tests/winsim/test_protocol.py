"""winsim's WinRM side, exercised by stock pywinrm over real sockets (no protocol mocks)."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from tests.winsim.conftest import (
    BOOTSTRAP,
    RUNNER,
    bootstrap_command,
    plan,
    run_runner,
    runner_stdin,
    start_fleet_process,
    start_runner,
)
from winsim.server import requests_received

TIMED_OUT = 2150858793
SHELL_NOT_FOUND = 2150858843


def clixml_text(stderr: bytes) -> str:
    """The error text of a ``#< CLIXML`` stderr document, as a client would show it."""
    assert stderr.startswith(b"#< CLIXML\r\n")
    root = ET.fromstring(stderr[len(b"#< CLIXML\r\n") :])
    parts = [el.text or "" for el in root.iter() if el.get("S") == "Error"]
    return "".join(parts).replace("_x000D__x000A_", "\r\n")


def lines_of(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]


# --- operations --------------------------------------------------------------------------


def test_each_cmd_shell_operation_round_trips_over_ntlm(fleet):
    p = fleet.protocol("proto-plain")
    shell_id = p.open_shell(codepage=65001)
    command_id = p.run_command(shell_id, "hostname")
    stdout, stderr, code, done = p.get_command_output_raw(shell_id, command_id)
    expected = fleet["proto-plain"].computer_name.encode() + b"\r\n"
    assert (stdout, stderr, code, done) == (expected, b"", 0, True)
    p.cleanup_command(shell_id, command_id)  # Signal: asserts RelatesTo == MessageID
    p.close_shell(shell_id)  # Delete: same assertion
    with pytest.raises(WSManFaultError) as err:
        p.run_command(shell_id, "hostname")
    assert err.value.wsman_fault_code == SHELL_NOT_FOUND


def test_a_host_counts_every_request_it_receives_but_not_the_count_itself(fleet):
    url = f"http://127.0.0.1:{fleet['proto-plain'].port}/wsman"
    before = requests_received(url)
    assert requests_received(url) == before  # asking is not counted
    p = fleet.protocol("proto-plain")
    shell_id = p.open_shell()  # a new connection: the NTLM handshake (3 requests), Create
    p.close_shell(shell_id)  # Delete
    p.transport.close_session()
    assert requests_received(url) - before == 5


def test_hostname_and_whoami_answer_like_windows(fleet):
    p = fleet.protocol("proto-domain")
    shell_id = p.open_shell()
    out = {}
    for command in ("hostname", "whoami"):
        command_id = p.run_command(shell_id, command)
        out[command] = p.get_command_output(shell_id, command_id)
    p.close_shell(shell_id)
    host = fleet["proto-domain"]
    assert out["hostname"] == (host.computer_name.encode() + b"\r\n", b"", 0)
    assert out["whoami"] == (b"corp\\yamada\r\n", b"", 0)


def test_any_other_command_exits_1_saying_winsim_runs_only_the_runner(fleet):
    p = fleet.protocol("proto-plain")
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "ipconfig", ["/all"])
    stdout, stderr, code = p.get_command_output(shell_id, command_id)
    p.close_shell(shell_id)
    assert (stdout, code) == (b"", 1)
    assert b"winsim runs only the kaiketsu runner protocol" in stderr


def test_runner_plan_runs_and_every_step_line_comes_back(fleet):
    stdout, stderr, code = run_runner(
        fleet.protocol("proto-plain"), plan("os_info", "vpn_connection")
    )
    results = lines_of(stdout)
    assert code == 0 and stderr == b""
    assert [r.get("step") for r in results[:2]] == ["s1", "s2"]
    assert results[0]["facts"]["computer_name"] == fleet["proto-plain"].computer_name
    assert results[-1] == {"end": True, "steps": 2}


def test_a_bad_plan_exits_1_after_a_fatal_line(fleet):
    bad = {"version": 2, "job": "t", "steps": []}
    stdout, _, code = run_runner(fleet.protocol("proto-plain"), bad)
    assert code == 1
    assert "fatal" in lines_of(stdout)[-1]


def test_stdin_arrives_in_several_sends_before_end(fleet):
    p = fleet.protocol("proto-plain", operation_timeout_sec=1, read_timeout_sec=3)
    shell_id = p.open_shell(codepage=65001)
    command_id = p.run_command(shell_id, bootstrap_command())
    data = runner_stdin(plan("os_info"))
    p.send_command_input(shell_id, command_id, data[:10], end=False)
    with pytest.raises(WinRMOperationTimeoutError):
        p.get_command_output_raw(shell_id, command_id)  # nothing runs before stdin ends
    p.send_command_input(shell_id, command_id, data[10:], end=True)
    stdout, _, code = p.get_command_output(shell_id, command_id)
    p.close_shell(shell_id)
    assert code == 0 and lines_of(stdout)[-1] == {"end": True, "steps": 1}


def test_receive_with_nothing_ready_is_the_timed_out_fault_after_operation_timeout(fleet):
    p = fleet.protocol("proto-plain", operation_timeout_sec=1, read_timeout_sec=3)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, bootstrap_command())  # waits for stdin forever
    started = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):  # pywinrm's name for code 2150858793
        p.get_command_output_raw(shell_id, command_id)
    assert 0.9 <= time.monotonic() - started < 2.5
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)


def test_output_streams_first_step_before_the_last_step_finishes(fleet):
    # 400 ms per step: the first line must reach the client while steps 2 and 3 still run.
    p = fleet.protocol("proto-streaming")
    started = time.monotonic()
    shell_id, command_id = start_runner(p, plan("os_info", "os_info", "os_info"))
    first = b""
    while not first:
        try:
            first, _, _, done = p.get_command_output_raw(shell_id, command_id)
        except WinRMOperationTimeoutError:
            continue
    first_at = time.monotonic() - started
    assert not done
    assert [r["step"] for r in lines_of(first)] == ["s1"]
    rest, _, code = p.get_command_output(shell_id, command_id)
    total = time.monotonic() - started
    p.close_shell(shell_id)
    assert code == 0 and [r.get("step") for r in lines_of(rest)] == ["s2", "s3", None]
    assert first_at < 0.8 and total >= 1.2


# --- code pages --------------------------------------------------------------------------


def test_japanese_facts_survive_any_code_page_because_result_lines_are_ascii(fleet):
    # Write-ResultLine escapes non-ASCII as \uXXXX (review D-7): the console's code page, or a
    # failed switch to UTF-8, can no longer turn a step line into garbage.
    p = fleet.protocol("proto-plain")
    utf8, _, _ = run_runner(p, plan("vpn_connection"), codepage=65001)
    oem, _, _ = run_runner(p, plan("vpn_connection"), codepage=437)
    assert utf8.isascii() and oem.isascii()
    assert lines_of(utf8)[0]["facts"]["name"] == "社内VPN"
    assert lines_of(oem)[0]["facts"]["name"] == "社内VPN"


def test_whoami_of_a_japanese_account_is_question_marks_under_code_page_437(fleet):
    p = fleet.protocol("proto-japanese-user")
    shell_id = p.open_shell(codepage=437)
    out_437 = p.get_command_output(shell_id, p.run_command(shell_id, "whoami"))[0]
    p.close_shell(shell_id)
    shell_id = p.open_shell(codepage=65001)
    out_utf8 = p.get_command_output(shell_id, p.run_command(shell_id, "whoami"))[0]
    p.close_shell(shell_id)
    assert out_437.endswith(b"\\??\r\n")
    assert out_utf8.decode("utf-8").endswith("\\山田\r\n")


# --- Windows' own limits -----------------------------------------------------------------


def test_command_line_of_8191_characters_runs_and_8192_is_too_long(fleet):
    p = fleet.protocol("proto-plain")
    shell_id = p.open_shell()
    ok = p.get_command_output(shell_id, p.run_command(shell_id, "hostname".ljust(8191)))
    too_long = p.get_command_output(shell_id, p.run_command(shell_id, "hostname".ljust(8192)))
    p.close_shell(shell_id)
    assert ok[2] == 0
    assert too_long == (b"", b"The command line is too long.\r\n", 1)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("$a = $null ?? 'x'", "Unexpected token '??' in expression or statement."),
        ("$a = $true ? 1 : 2", "Unexpected token '?' in expression or statement."),
        (
            "Get-Service PolicyAgent && Write-Output ok",
            "The token '&&' is not a valid statement separator in this version.",
        ),
        (
            "Get-Service PolicyAgent || Write-Output no",
            "The token '||' is not a valid statement separator in this version.",
        ),
    ],
)
def test_powershell_7_syntax_in_the_bootstrap_fails_with_the_5_1_parser_error(
    fleet, snippet, message
):
    p = fleet.protocol("proto-plain")
    stdout, stderr, code = run_runner(p, plan("os_info"), bootstrap=BOOTSTRAP + snippet + "\n")
    assert code == 1 and stdout == b""
    text = clixml_text(stderr)
    assert message in text and "ParserError" in text


def test_powershell_7_syntax_in_the_runner_fails_in_scriptblock_create(fleet):
    p = fleet.protocol("proto-plain")
    runner = RUNNER + "$name = $plan.job ?? 'none'\n"
    stdout, stderr, code = run_runner(p, plan("os_info"), runner=runner)
    assert code == 1 and stdout == b""
    text = clixml_text(stderr)
    assert 'Exception calling "Create"' in text
    assert "Unexpected token '??' in expression or statement." in text


def test_ps7_tokens_inside_strings_and_comments_are_fine(fleet):
    runner = RUNNER + "# a && b ?? c\n$s = 'x || y'\n"
    stdout, stderr, code = run_runner(fleet.protocol("proto-plain"), plan("os_info"), runner=runner)
    assert code == 0 and stderr == b""


def test_progress_record_on_stderr_unless_the_bootstrap_silences_it(fleet):
    p = fleet.protocol("proto-plain")
    loud = BOOTSTRAP.replace("$ProgressPreference = 'SilentlyContinue'\n", "")
    stdout, stderr, code = run_runner(p, plan("os_info"), bootstrap=loud)
    assert code == 0 and lines_of(stdout)[-1]["end"] is True
    assert stderr.startswith(b"#< CLIXML\r\n<Objs ")
    assert b'<Obj S="progress"' in stderr and stderr.endswith(b"</Objs>")
    _, quiet_stderr, _ = run_runner(p, plan("os_info"))
    assert quiet_stderr == b""


def test_malformed_soap_gets_a_wsman_fault(fleet):
    p = fleet.protocol("proto-plain")
    with pytest.raises(WSManFaultError) as err:
        p.send_message("<not-a-soap-envelope/>")
    assert err.value.code == 500 and err.value.wsman_fault_code is not None


def test_unknown_shell_id_gets_the_shell_not_found_fault(fleet):
    p = fleet.protocol("proto-plain")
    with pytest.raises(WSManFaultError) as err:
        p.run_command("00000000-0000-0000-0000-000000000000", "hostname")
    assert err.value.wsman_fault_code == SHELL_NOT_FOUND
    assert "the shell was not found on the server" in err.value.reason


# --- authentication ----------------------------------------------------------------------


def test_ntlm_keeps_one_encrypted_connection_for_many_requests(fleet):
    p = fleet.protocol("proto-plain")
    shell_id = p.open_shell()
    for _ in range(3):
        p.get_command_output(shell_id, p.run_command(shell_id, "hostname"))
    p.close_shell(shell_id, close_session=False)
    assert p.transport.encryption is not None  # pywinrm negotiated MS-WSMV encryption
    # NTLM authenticates the connection, not the request: winsim kept the one it accepted.
    pools = p.transport.session.get_adapter(p.transport.endpoint).poolmanager.pools
    assert [pools[key].num_connections for key in pools.keys()] == [1]  # noqa: SIM118 (not iterable)


def test_unencrypted_ntlm_over_http_is_refused(fleet):
    p = fleet.protocol("proto-plain", message_encryption="never")
    with pytest.raises(InvalidCredentialsError):
        p.open_shell()


def test_wrong_ntlm_password_raises_invalid_credentials(fleet):
    p = fleet.protocol("proto-plain", password="wrong")
    with pytest.raises(InvalidCredentialsError):
        p.open_shell()


def test_ntlm_domain_must_match_the_hosts_domain(fleet):
    p = fleet.protocol("proto-domain", username="OTHER\\Yamada")
    with pytest.raises(InvalidCredentialsError):
        p.open_shell()


def test_basic_over_https_works(fleet):
    p = fleet.protocol("proto-https")
    shell_id = p.open_shell(codepage=65001)
    stdout, _, code = p.get_command_output(shell_id, p.run_command(shell_id, "whoami"))
    p.close_shell(shell_id)
    assert code == 0 and stdout.endswith(b"\\kaiketsu\r\n")


def test_wrong_basic_password_over_https_raises_invalid_credentials(fleet):
    with pytest.raises(InvalidCredentialsError):
        fleet.protocol("proto-https", password="wrong").open_shell()


def test_basic_over_plain_http_is_refused(fleet):
    host = fleet["proto-plain"]
    p = Protocol(
        f"http://127.0.0.1:{host.port}/wsman",
        transport="basic",
        username=host.username,
        password=host.password,
        server_cert_validation="ignore",
    )
    with pytest.raises(InvalidCredentialsError):
        p.open_shell()


# --- faults ------------------------------------------------------------------------------


def test_refused_connection_is_a_requests_connection_error(fleet):
    with pytest.raises(requests.exceptions.ConnectionError):
        fleet.protocol("proto-refuse").open_shell()


def test_host_that_never_answers_is_a_read_timeout(fleet):
    p = fleet.protocol("proto-hang", operation_timeout_sec=1, read_timeout_sec=2)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        p.open_shell()
    assert time.monotonic() - started < 4


def test_connection_dropped_in_the_middle_of_a_receive(fleet):
    p = fleet.protocol("proto-drop")
    shell_id, command_id = start_runner(p, plan("os_info"))
    with pytest.raises(requests.exceptions.RequestException) as err:
        while True:
            try:
                p.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                continue
    # Half an answer, then a reset: requests names that ChunkedEncodingError even though the
    # body has a Content-Length ("Connection broken: ConnectionResetError").
    assert isinstance(err.value, requests.exceptions.ChunkedEncodingError)
    assert "Connection broken" in str(err.value)


def test_runner_exit_code_fault_is_what_the_client_gets(fleet):
    stdout, _, code = run_runner(fleet.protocol("proto-exit7"), plan("os_info"))
    assert code == 7 and lines_of(stdout)[-1]["end"] is True


def test_rebooting_host_resets_new_connections_until_it_is_back(fleet):
    host = fleet["proto-reboot"]
    p = fleet.protocol("proto-reboot")
    shell_id = p.open_shell()  # up, and this connection is authenticated
    host.schedule_reboot(0)
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            p.run_command(shell_id, "hostname")  # the open connection is reset
        with pytest.raises(requests.exceptions.ConnectionError):
            fleet.protocol("proto-reboot").open_shell()  # and so is a new one
    finally:
        host.boot()
    p = fleet.protocol("proto-reboot")
    p.close_shell(p.open_shell())  # back


# --- the process -------------------------------------------------------------------------


def test_500_hosts_start_in_one_process_and_answer(tmp_path: Path):
    profile = tmp_path / "fleet.yaml"
    profile.write_text(
        "templates:\n  pc: {locale: en-US}\n"
        "hosts:\n  tls-one: {scheme: https}\n"
        "generate:\n  - {count: 499, template: pc, prefix: pc-}\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    proc, hosts = start_fleet_process(profile)
    try:
        listening = time.monotonic() - started
        assert len(hosts) == 500 and len({h["url"] for h in hosts}) == 500
        assert hosts[0]["url"].startswith("https://") and hosts[0]["transport"] == "basic"
        # Every host answers an anonymous POST with the 401 that starts NTLM.
        for info in hosts[1:]:
            port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
            assert _anonymous_post_status(port) == b"401"
        for info in (hosts[0], hosts[1], hosts[-1]):
            p = Protocol(
                info["url"],
                transport="ssl" if info["transport"] == "basic" else "ntlm",
                username=info["username"],
                password=info["password"],
                server_cert_validation="ignore",
            )
            shell_id = p.open_shell()
            assert p.get_command_output(shell_id, p.run_command(shell_id, "hostname"))[2] == 0
            p.close_shell(shell_id)
        assert listening < 15
    finally:
        assert proc.stop(timeout=10) == 0  # SIGTERM: winsim stops cleanly


def _anonymous_post_status(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        return sock.recv(64).split(b" ")[1]
