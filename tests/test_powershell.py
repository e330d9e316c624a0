"""runner.ps1 and bootstrap.ps1 are Windows PowerShell 5.1, and KB values reach them only as data.

Parsed with tree-sitter-powershell (a real PowerShell grammar). Its grammar knows PowerShell 7's
``&&``/``||`` chains and fails on ``??``, ``?.`` and the ternary: the detector below turns both
into a list of PowerShell-7-only constructs.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

from diagnostics.remote import BOOTSTRAP_MARKER, MAX_COMMAND_LINE, build_command, plan_json
from winsim import shell as winsim_shell

POWERSHELL = Path(__file__).resolve().parent.parent / "diagnostics" / "powershell"
RUNNER = POWERSHELL / "runner.ps1"
BOOTSTRAP = POWERSHELL / "bootstrap.ps1"
AGENT_SCRIPTS = sorted((POWERSHELL.parent.parent / "agent").glob("*.ps1"))  # issue #14

_PARSER = Parser(Language(tree_sitter_powershell.language()))


def parse(source: str) -> Node:
    return _PARSER.parse(source.encode("utf-8")).root_node


def walk(node: Node):
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(source: str) -> list[str]:
    """ERROR and MISSING nodes, with their line numbers."""
    return [
        f"line {n.start_point[0] + 1}: {n.type} {n.text.decode(errors='replace')[:40]!r}"
        for n in walk(parse(source))
        if n.type == "ERROR" or n.is_missing
    ]


def ps7_only_syntax(source: str) -> list[str]:
    """Constructs Windows PowerShell 5.1 rejects: ``&&``/``||``, ``??``, ``?.``, ternary, -Parallel."""
    found = []
    for n in walk(parse(source)):
        line = n.start_point[0] + 1
        if n.type == "pipeline_chain_tail":
            found.append(f"line {line}: pipeline chain {n.text.decode()!r}")
        elif n.type == "ERROR" and "?" in n.text.decode(errors="replace"):
            found.append(f"line {line}: ?? / ?. / ternary")
        elif n.type == "command_parameter" and n.text.decode().lower() == "-parallel":
            found.append(f"line {line}: -Parallel")
    return found


def comments_and_strings_removed(source: str) -> str:
    """The code only: comments and string literals blanked, so a word in a comment is no hit."""
    data = bytearray(source.encode("utf-8"))
    for n in walk(parse(source)):
        if n.type in (
            "comment",
            "string_literal",
            "expandable_string_literal",
            "verbatim_string_characters",
        ):
            data[n.start_byte : n.end_byte] = b" " * (n.end_byte - n.start_byte)
    return data.decode("utf-8", errors="replace")


@pytest.mark.parametrize("script", [RUNNER, BOOTSTRAP, *AGENT_SCRIPTS], ids=lambda p: p.name)
def test_script_parses_without_error_nodes(script: Path) -> None:
    assert syntax_errors(script.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("script", [RUNNER, BOOTSTRAP, *AGENT_SCRIPTS], ids=lambda p: p.name)
def test_script_uses_no_powershell7_only_syntax(script: Path) -> None:
    assert ps7_only_syntax(script.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "sample",
    [
        "$port = $args.port ?? 500",
        "$name = $conn?.Name",
        "$level = $ok ? 'Required' : 'Optional'",
        "Get-Service PolicyAgent && Start-Service PolicyAgent",
        "Stop-Service IKEEXT || Write-Output failed",
        "1..3 | ForEach-Object -Parallel { $_ }",
    ],
)
def test_detector_catches_powershell7_only_sample(sample: str) -> None:
    assert ps7_only_syntax(sample) != []


def test_detector_accepts_plain_51_code_with_where_alias() -> None:
    sample = "$x = @(Get-Service | ? { $_.Status -eq 'Running' })\nif ($a -and $b) { $c = 1 }"
    assert ps7_only_syntax(sample) == []


def test_runner_never_turns_text_into_code() -> None:
    code = comments_and_strings_removed(RUNNER.read_text(encoding="utf-8")).lower()
    for banned in ("invoke-expression", "add-type", "[scriptblock]::create", "newscriptblock"):
        assert banned not in code, banned
    assert re.search(r"(^|[\s;|(])iex(\s|$)", code, re.MULTILINE) is None


def test_bootstrap_starts_with_marker_and_silences_progress() -> None:
    text = BOOTSTRAP.read_text(encoding="utf-8")
    # winsim recognises the bootstrap by this first line: the three must agree.
    assert text.splitlines()[0] == BOOTSTRAP_MARKER == winsim_shell.BOOTSTRAP_MARKER
    assert "$ProgressPreference = 'SilentlyContinue'" in text
    assert "-PlanJson $planJson" in text


def test_runner_writes_each_line_with_flush() -> None:
    text = RUNNER.read_text(encoding="utf-8")
    assert "[Console]::Out.WriteLine(" in text and "[Console]::Out.Flush()" in text
    assert "ConvertTo-Json -InputObject $Object -Compress -Depth 6" in text


HOSTILE_VALUES = [
    "x'; Remove-Item C:\\ -Recurse; '",
    'x"; shutdown /r /t 0; "',
    "$(Stop-Computer -Force)",
    "`$env:USERNAME `n `0",
    "a; b | c & d && e || f",
    "line one\nline two\r\n# comment\n@'\nhere\n'@",
    "日本語の接続 ＶＰＮ",
    "\u2018smart quotes\u2019 and \u201cdouble\u201d",
]


def hostile_plan(value: str) -> dict:
    return {
        "version": 1,
        "job": value,
        "steps": [
            {"id": "s1", "kind": "vpn_connection", "args": {"name": value}},
            {
                "id": "s2",
                "kind": "registry_value",
                "args": {"path": "HKLM:\\SOFTWARE\\" + value.replace("\n", " "), "name": value},
            },
            {
                "id": "s3",
                "kind": "schedule_reboot",
                "args": {"delay_seconds": 60, "message": value},
            },
        ],
    }


HARMLESS = {"version": 1, "job": "1", "steps": [{"id": "s1", "kind": "os_info", "args": {}}]}


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_kb_values_reach_powershell_only_as_data(value: str) -> None:
    plan = hostile_plan(value)
    command, stdin = build_command(plan)
    harmless_command, _ = build_command(HARMLESS)
    # The command line does not depend on the plan at all.
    assert command.encode() == harmless_command.encode()
    # stdin is two lines of pure base64 ...
    text = stdin.decode("ascii")
    lines = text.split("\n")
    assert lines[2:] == [""] and len(lines) == 3
    for line in lines[:2]:
        assert re.fullmatch(r"[A-Za-z0-9+/]+=*", line)
    # ... the first the runner, unchanged; the second the exact plan JSON.
    assert base64.b64decode(lines[0]).decode("utf-8") == RUNNER.read_text(encoding="utf-8")
    decoded = base64.b64decode(lines[1]).decode("utf-8")
    assert decoded == plan_json(plan)
    assert json.loads(decoded) == plan


def test_command_line_is_the_encoded_bootstrap_far_below_the_limit() -> None:
    command, _ = build_command(HARMLESS)
    prefix = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    assert command.startswith(prefix)
    script = base64.b64decode(command[len(prefix) :]).decode("utf-16-le")
    assert script == BOOTSTRAP.read_text(encoding="utf-8")
    assert len(command) < MAX_COMMAND_LINE // 2


def test_big_plan_travels_on_stdin_not_on_the_command_line() -> None:
    steps = [{"id": f"s{i}", "kind": "service", "args": {"name": f"Svc{i}"}} for i in range(500)]
    command, stdin = build_command({"version": 1, "steps": steps})
    assert len(command) < MAX_COMMAND_LINE
    assert len(stdin) > MAX_COMMAND_LINE


def test_native_programs_get_plan_values_only_as_argument_variables() -> None:
    code = comments_and_strings_removed(RUNNER.read_text(encoding="utf-8"))
    calls = [
        line.strip() for line in code.splitlines() if re.search(r"&\s*(shutdown|rasdial)", line)
    ]
    assert calls, "the runner calls shutdown.exe and rasdial.exe"
    for call in calls:
        # Every argument is a literal switch or a plain $variable: no "$(...)" or "...$x..." text.
        args = re.sub(r"^.*?&\s*\S+", "", call).split("2>&1")[0]
        for word in re.findall(r"\S+", args):
            assert re.fullmatch(r"/[A-Za-z]+|p:4:1|\$[A-Za-z]+(\.ToArray\(\))?", word), (call, word)


def test_bootstrap_checks_the_language_mode_first_and_prints_what_winsim_prints() -> None:
    lines = BOOTSTRAP.read_text(encoding="utf-8").splitlines()
    code = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    # The guard runs before anything ConstrainedLanguage refuses (New-Object of .NET types).
    assert code[0] == winsim_shell.LANGUAGE_MODE_GUARD
    assert code[1].strip() == "'" + winsim_shell.LANGUAGE_MODE_FATAL + "'"


def test_the_plan_reaches_no_cmdlet_parameter() -> None:
    # Module Logging (event 4103) records cmdlet parameters: the plan, which may hold the VPN
    # key, is parsed by .NET instead of ConvertFrom-Json (review D-10).
    code = comments_and_strings_removed(RUNNER.read_text(encoding="utf-8")).lower()
    assert "convertfrom-json" not in code
    assert "javascriptserializer" in code


def test_the_psk_fix_checks_module_logging_before_calling_the_cmdlet() -> None:
    text = RUNNER.read_text(encoding="utf-8")
    body = text[text.index("function Invoke-SetVpnPsk") :]
    assert body.index("Test-ModuleLoggingRecords") < body.index("Set-VpnConnection @params")


def test_result_lines_are_made_ascii_before_they_are_written() -> None:
    text = RUNNER.read_text(encoding="utf-8")
    assert "[Console]::Out.WriteLine((ConvertTo-AsciiJson -Json $json))" in text
