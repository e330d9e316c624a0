"""One agent protocol (agent/protocol.json) for the portal, winsim's agent mode and the
PowerShell agent: a change to one that the others do not follow fails here (issue #14)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from django.urls import reverse

from diagnostics import agents
from tests.test_powershell import comments_and_strings_removed
from winsim import agent as winsim_agent

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = json.loads((ROOT / "agent" / "protocol.json").read_text("utf-8"))
AGENT_PS1 = (ROOT / "agent" / "kaiketsu-agent.ps1").read_text("utf-8")
INSTALL_PS1 = (ROOT / "agent" / "install.ps1").read_text("utf-8")
WINSIM = inspect.getsource(winsim_agent)

# Each refusal of a plan, in the order both agents check (the first failing check names it).
REFUSALS = [
    ("signature", "signature does not verify"),
    ("fields", "envelope fields or version differ"),
    ("machine", "another machine|not this machine"),
    ("task", "task differs"),
    ("expired", "plan expired"),
    ("future", "issued in the future"),
    ("replay", "replay"),
    ("job", "job differs"),
]


def _order(source: str) -> list[str]:
    found = []
    for tag, pattern in REFUSALS:
        match = re.search(pattern, source)
        assert match, f"{tag!r} check missing"
        found.append((match.start(), tag))
    return [tag for _, tag in sorted(found)]


def test_the_portal_serves_exactly_the_protocols_paths():
    assert reverse("diagnostics:agent-enrol") == PROTOCOL["paths"]["enrol"]
    assert reverse("diagnostics:agent-work") == PROTOCOL["paths"]["work"]
    assert reverse("diagnostics:agent-lines", args=[7]) == PROTOCOL["paths"]["lines"].format(task=7)
    assert agents.PROTOCOL == PROTOCOL and winsim_agent.PROTOCOL == PROTOCOL


def test_both_agents_read_paths_statuses_and_the_scheme_from_the_protocol():
    for name in PROTOCOL["paths"]:
        assert f"$Protocol.paths.{name}" in AGENT_PS1
        assert f'PROTOCOL["paths"]["{name}"]' in WINSIM or f"PROTOCOL['paths']['{name}']" in WINSIM
    for name in PROTOCOL["status"]:
        assert f"$Protocol.status.{name}" in AGENT_PS1 and f'PROTOCOL["status"]["{name}"]' in WINSIM
    assert "$Protocol.auth_scheme" in AGENT_PS1 and "PROTOCOL['auth_scheme']" in WINSIM
    # No path or status is spelled out by hand in either agent.
    for path in PROTOCOL["paths"].values():
        assert path not in AGENT_PS1 and path not in WINSIM


def test_both_agents_enrol_and_poll_with_the_protocols_fields():
    ps_enrol = re.search(r"\$body = @\{(.*?)\}", AGENT_PS1).group(1)
    assert sorted(re.findall(r"(\w+) =", ps_enrol)) == sorted(PROTOCOL["enrol_fields"])
    py_enrol = re.search(r"json\.dumps\(\s*\{(.*?)\}", WINSIM, re.S).group(1)
    assert sorted(re.findall(r'"(\w+)":', py_enrol)) == sorted(PROTOCOL["enrol_fields"])
    assert sorted(re.findall(r"[?&](\w+)=", AGENT_PS1)) == sorted(PROTOCOL["work_query"])
    py_query = re.search(r"urlencode\(\{(.*?)\}\)", WINSIM).group(1)
    assert sorted(re.findall(r'"(\w+)":', py_query)) == sorted(PROTOCOL["work_query"])


def test_the_portal_signs_exactly_the_envelope_both_agents_check(db):
    from diagnostics.models import Credential, Machine

    cred = Credential.objects.create(name="c", username="u", password_encrypted="x")
    machine = Machine.objects.create(name="pc-1", address="a", credential=cred)
    signed = agents.sign_plan(5, 9, machine, {"version": 1, "job": "5", "steps": []})
    assert sorted(json.loads(signed["payload"])) == sorted(PROTOCOL["envelope"])
    assert "$Protocol.envelope" in AGENT_PS1 and 'PROTOCOL["envelope"]' in WINSIM


def test_both_agents_refuse_plans_for_the_same_reasons_in_the_same_order():
    ps = AGENT_PS1[AGENT_PS1.index("function Test-KaiketsuEnvelope") :]
    ps = ps[: ps.index("function Send-Line")]
    py = inspect.getsource(winsim_agent.check_envelope)
    assert _order(ps) == _order(py) == [tag for tag, _ in REFUSALS]


def test_the_agent_runs_only_the_projects_runner_and_turns_no_text_into_code():
    code = comments_and_strings_removed(AGENT_PS1 + INSTALL_PS1).lower()
    for banned in (
        "invoke-expression",
        "[scriptblock]::create",
        "newscriptblock",
        "-typedefinition",
    ):
        assert banned not in code, banned
    assert re.search(r"(^|[\s;|(])iex(\s|$)", code, re.MULTILINE) is None
    # The plan reaches PowerShell on stdin behind the project's bootstrap, never as code.
    assert "'bootstrap.ps1'" in AGENT_PS1 and "'runner.ps1'" in AGENT_PS1
    assert "RedirectStandardInput = $true" in AGENT_PS1


def test_the_agent_enables_tls12_keeps_its_credential_sealed_and_backs_off():
    assert "[Net.SecurityProtocolType]::Tls12" in AGENT_PS1
    assert "DataProtectionScope]::LocalMachine" in AGENT_PS1
    assert "S-1-5-18" in AGENT_PS1  # the state file: SYSTEM only
    assert "GetSystemWebProxy()" in AGENT_PS1
    assert "$MaxBackoff" in AGENT_PS1 and "$backoff * 2" in AGENT_PS1
    assert "-AtStartup" in INSTALL_PS1 and "S-1-5-18" in INSTALL_PS1
    assert "https://" in INSTALL_PS1  # the installer refuses a portal URL without TLS
