"""``manage.py kb_match``: the stable command-line contract (DESIGN.md, contract 3)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from diagnostics import kbindex

SEED = "l2tp-ipsec-psk-negotiation"
MSG_789_EN = (
    "The L2TP connection attempt failed because the security layer encountered a processing "
    "error during initial negotiations with the remote computer."
)
# Codes Windows defines that no shipped article answers (checked below, not assumed).
UNCOVERED = [605, 629, 13843]


def _kb_match(*args: str) -> str:
    out = StringIO()
    call_command("kb_match", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _fresh_index(kb):
    kbindex.bump_version()


def test_json_keeps_the_matches_contract_and_adds_confident_and_codes():
    data = json.loads(_kb_match(f"Error 789: {MSG_789_EN}", "--json"))
    assert set(data) == {"matches", "confident", "codes"}
    best = data["matches"][0]
    assert set(best) == {"article", "title", "score", "error_codes", "why"}
    assert best["article"] == SEED and 789 in best["error_codes"]
    assert best["why"].startswith("error code 789 + phrase: '")
    assert data["confident"] is True
    assert data["codes"] == [
        {"code": 789, "meaning": MSG_789_EN, "in_kb": True},
    ]


@pytest.mark.parametrize("code", UNCOVERED)
def test_a_code_no_article_covers_is_not_confident_and_carries_windows_meaning(code):
    assert code not in kbindex.get_index().by_code
    data = json.loads(_kb_match(f"Remote Access error {code}", "--json", "--lang", "en"))
    assert data["confident"] is False
    (row,) = data["codes"]
    assert row["code"] == code and row["in_kb"] is False
    assert len(row["meaning"]) > 10


def test_why_stays_english_whatever_the_title_language():
    data = json.loads(_kb_match("エラー 789", "--json", "--lang", "ja"))
    assert data["matches"][0]["why"] == "error code 789"
    assert data["matches"][0]["title"] != ""


def test_jsonl_answers_each_line_with_the_same_shape(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"text": "error 789"}) + "\n" + json.dumps({"text": "error 605"}) + "\n",
        encoding="utf-8",
    )
    lines = [json.loads(x) for x in _kb_match("--jsonl", str(path)).splitlines()]
    assert [x["confident"] for x in lines] == [True, False]
    assert [x["codes"][0]["in_kb"] for x in lines] == [True, False]


def test_plain_output_names_the_code_and_says_it_is_not_in_the_knowledge_base():
    out = _kb_match("Remote Access error 605")
    assert "code 605 (NOT in the knowledge base)" in out
    assert "(no confident match)" in out
