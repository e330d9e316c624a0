"""The shipped knowledge base (kb/*.yaml) and its loader, validator and canonical writer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from diagnostics import catalog, kb

KB_DIR = Path(__file__).resolve().parent.parent / "kb"
FILES = sorted(KB_DIR.glob("*.yaml"))
SEED = "l2tp-ipsec-psk-negotiation"
POLICY_AGENT = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent"
RASMAN = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters"

# The error codes the shipped KB must answer, at the least.
REQUIRED_CODES = {
    619,
    628,
    651,
    691,
    720,
    734,
    741,
    742,
    787,
    788,
    789,
    791,
    800,
    806,
    807,
    809,
    812,
    868,
    13801,
    13806,
    13868,
}


def _seed() -> dict:
    return kb.load_file(KB_DIR / f"{SEED}.yaml")


def _by_key(items: list[dict]) -> dict[str, dict]:
    return {item["key"]: item for item in items}


def test_the_kb_directory_ships_articles():
    assert len(FILES) >= 1
    assert (KB_DIR / f"{SEED}.yaml").exists()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_shipped_article_validates(path: Path):
    assert kb.validate(kb.load_file(path)) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_shipped_file_round_trips_byte_for_byte(path: Path):
    text = path.read_text(encoding="utf-8")
    assert kb.dump(kb.load_text(text)) == text


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_explanation_opens_with_the_problem_the_page_heads_it_with(path: Path):
    """The job page heads a failed check with its explanation's first sentence (issue #11)."""
    from diagnostics.assessment import first_sentence

    for check in kb.load_file(path).get("checks", []):
        if not check.get("explanation"):
            continue  # evidence: never a problem
        for lang in ("ja", "en"):
            problem, _rest = first_sentence(check["explanation"][lang])
            assert problem.endswith(("。", ".", ")")), (check["key"], lang, problem)
            assert problem != check["title"][lang] and len(problem) < 200, (check["key"], lang)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_file_is_named_after_its_slug(path: Path):
    assert kb.load_file(path)["slug"] == path.stem


def test_slugs_are_unique_and_load_dir_returns_every_file():
    articles = kb.load_dir(KB_DIR)
    slugs = [a["slug"] for a in articles]
    assert len(articles) == len(FILES)
    assert len(set(slugs)) == len(slugs)


def test_the_shipped_kb_answers_every_required_error_code():
    codes = {c for a in kb.load_dir(KB_DIR) for c in a["error_codes"]}
    assert codes >= REQUIRED_CODES, sorted(REQUIRED_CODES - codes)


def test_no_error_code_belongs_to_two_published_articles():
    owner: dict[int, str] = {}
    for article in kb.load_dir(KB_DIR):
        for code in article["error_codes"]:
            assert code not in owner, f"{code} in {owner.get(code)} and {article['slug']}"
            owner[code] = article["slug"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_article_carries_a_verified_english_microsoft_wording(path: Path):
    sigs = kb.load_file(path)["signatures"]
    assert any(s["lang"] == "en" and s["verified"] for s in sigs)
    assert any(s["lang"] == "ja" for s in sigs)


def test_seed_answers_789_and_791_with_the_seed_japanese_wording():
    seed = _seed()
    assert seed["error_codes"] == [789, 791]
    ja = [s["text"] for s in seed["signatures"] if s["lang"] == "ja"]
    assert any("セキュリティ層で処理エラーが検出されたため" in t for t in ja)
    assert any("この接続のセキュリティ ポリシーが見つからなかったため" in t for t in ja)


def test_seed_checks_run_in_the_agreed_order():
    keys = [c["key"] for c in _seed()["checks"]]
    kinds = [c["kind"] for c in _seed()["checks"]]
    assert keys[:3] == ["policyagent-running", "ikeext-running", "bfe-running"]
    assert kinds == [
        "service",
        "service",
        "service",
        "registry_value",
        "registry_value",
        "vpn_connection",
        "vpn_connection",
        "vpn_connection",
        "vpn_connection",
        "vpn_connection",
        "firewall_rules",
        "dns_resolve",
        "ping",
        "vpn_events",
    ]


def test_seed_checks_the_nat_traversal_value_is_2_and_its_fix_needs_a_restart():
    seed = _seed()
    check = _by_key(seed["checks"])["nat-traversal-registry"]
    assert check["args"] == {
        "path": POLICY_AGENT,
        "name": "AssumeUDPEncapsulationContextOnSendRule",
    }
    assert check["expect"] == [{"fact": "value", "op": "eq", "value": 2}]
    fix = _by_key(seed["fixes"])[check["fix"]]
    assert fix["restart_required"] is True
    assert fix["steps"][0]["args"]["value"] == 2
    assert fix["steps"][0]["args"]["type"] == "DWord"


def test_seed_accepts_prohibit_ipsec_absent_or_zero_and_removes_it_with_a_restart():
    seed = _seed()
    check = _by_key(seed["checks"])["prohibit-ipsec-off"]
    assert check["args"] == {"path": RASMAN, "name": "ProhibitIpSec"}
    assert check["expect"] == [{"fact": "value", "op": "in", "value": [None, 0]}]
    fix = _by_key(seed["fixes"])[check["fix"]]
    assert fix["restart_required"] is True
    assert fix["steps"][0]["args"]["absent"] is True


def test_seed_checks_the_vpn_connection_settings():
    checks = _by_key(_seed()["checks"])
    expects = {
        (e["fact"], e["op"], repr(e.get("value")))
        for key in (
            "vpn-connection-l2tp",
            "vpn-connection-psk",
            "vpn-auth-methods",
            "vpn-encryption",
            "vpn-ipsec-policy",
        )
        for e in checks[key]["expect"]
    }
    assert ("tunnel_type", "eq", "'L2tp'") in expects
    assert ("l2tp_ipsec_auth", "eq", "'Psk'") in expects
    assert ("authentication_method", "contains", "'MSChapv2'") in expects
    assert ("encryption_level", "ne", "'NoEncryption'") in expects
    ipsec = {e["fact"] for e in checks["vpn-ipsec-policy"]["expect"]}
    assert "ipsec_custom_policy.encryption_method" in ipsec
    # an absent custom policy reads as null on every path and must pass
    assert all(None in e["value"] for e in checks["vpn-ipsec-policy"]["expect"])


def test_seed_firewall_check_covers_udp_500_1701_4500_outbound():
    check = _by_key(_seed()["checks"])["firewall-udp-ports"]
    assert check["args"] == {"protocol": "UDP", "ports": [500, 1701, 4500], "direction": "Outbound"}
    assert check["expect"] == [{"fact": "blocked_ports", "op": "empty"}]


def test_seed_fixes_use_the_catalog_and_the_psk_comes_from_the_secret_store():
    fixes = _by_key(_seed()["fixes"])
    psk = fixes["reset-company-psk"]
    assert psk["needs_approval"] is True
    assert psk["steps"] == [
        {"kind": "set_vpn_psk", "args": {"psk": {"secret": "company-l2tp-psk"}}}
    ]
    assert fixes["revert-ipsec-default"]["steps"][0]["args"] == {"revert_to_default": True}
    services = {
        s["args"]["name"]
        for k in ("start-policyagent", "start-ikeext", "start-bfe")
        for s in fixes[k]["steps"]
    }
    assert services == {"PolicyAgent", "IKEEXT", "BFE"}
    assert all(s["kind"] in catalog.FIX_KINDS for f in fixes.values() for s in f["steps"])


def test_seed_notes_correct_the_seed_politely_in_both_languages():
    notes = _seed()["notes"]
    for word in ("KB926179", "ProhibitIpSec", "PPTP", "Test-NetConnection"):
        assert word in notes["ja"] and word in notes["en"], word
    assert "| 0" in notes["en"] and "| 1 |" in notes["en"] and "| 2 |" in notes["en"]


def test_seed_keeps_manual_steps_for_what_cannot_be_automated():
    titles = " ".join(m["title"]["en"] for m in _seed()["manual_steps"])
    for word in ("pre-shared key", "security software", "router", "group policy"):
        assert word in titles, word


# --- the validator itself: each rule must be able to fail ------------------------------------


def _broken(change) -> list[str]:
    article = copy.deepcopy(_seed())
    change(article)
    return kb.validate(article)


def test_validate_reports_a_missing_language():
    problems = _broken(lambda a: a["title"].pop("en"))
    assert "title.en: missing or empty" in problems


def test_validate_reports_a_bad_slug():
    assert any(p.startswith("slug:") for p in _broken(lambda a: a.update(slug="L2TP seed")))


def test_validate_reports_a_duplicate_check_key():
    problems = _broken(lambda a: a["checks"].append(copy.deepcopy(a["checks"][0])))
    assert any("used twice" in p for p in problems)


def test_validate_reports_a_fix_kind_used_as_a_check():
    def change(a):
        a["checks"][0]["kind"] = "set_service"

    assert any("is not a check kind" in p for p in _broken(change))


def test_validate_reports_args_the_catalog_rejects():
    def change(a):
        a["checks"][0]["args"] = {"name": "Policy Agent; rm"}

    assert any("service.name" in p for p in _broken(change))


def test_validate_reports_an_unknown_expect_operator_and_fact():
    def change(a):
        a["checks"][0]["expect"] = [{"fact": "colour", "op": "approx", "value": 1}]

    problems = _broken(change)
    assert any("no fact 'colour'" in p for p in problems)
    assert any("'approx' is not one of" in p for p in problems)


def test_validate_reports_an_unquoted_boolean_operator():
    def change(a):
        a["checks"][0]["expect"] = [{"fact": "exists", "op": True}]

    assert any("quoted string" in p for p in _broken(change))


def test_validate_reports_a_fix_key_that_does_not_exist():
    def change(a):
        a["checks"][0]["fix"] = "no-such-fix"

    assert any("no fix with key 'no-such-fix'" in p for p in _broken(change))


def test_validate_reports_a_secret_placeholder_on_a_non_secret_arg():
    def change(a):
        a["fixes"][0]["steps"][0]["args"]["name"] = {"secret": "x"}

    assert any("only secret arguments" in p for p in _broken(change))


def test_validate_reports_a_signature_without_source():
    problems = _broken(lambda a: a["signatures"][0].pop("source"))
    assert any("signatures[0].source" in p for p in problems)


def test_dump_writes_keys_in_the_documented_order_whatever_the_input_order():
    seed = _seed()
    shuffled = dict(reversed(list(seed.items())))
    shuffled["checks"] = [dict(reversed(list(c.items()))) for c in seed["checks"]]
    assert kb.dump(shuffled) == kb.dump(seed)
    assert kb.dump(seed).startswith("slug: l2tp-ipsec-psk-negotiation\nstatus: published\n")


def test_dump_writes_multi_line_prose_as_block_scalars_and_keeps_japanese_readable():
    text = kb.dump(_seed())
    assert "  ja: |\n" in text
    assert "セキュリティ層" in text and "\\u" not in text


def _paths(value, path=()):
    """Every position in a parsed article: mapping keys and list indexes, depth first."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*path, key)
        yield from _paths(inner, (*path, key))


@pytest.mark.parametrize("wrong", [["a list"], {"a": "mapping"}, None, 7])
def test_validate_never_raises_on_a_wrongly_typed_value_anywhere(wrong):
    seed = _seed()
    raised = []
    for path in _paths(seed):
        article = copy.deepcopy(seed)
        parent = article
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = wrong
        try:
            kb.validate(article)
        except Exception as exc:  # an admin's typo must be a listed problem, not a traceback
            raised.append((path, repr(exc)))
    assert raised == []
