"""Windows' own RAS/VPN error table (diagnostics/data/ras_codes.json), kept as sourced data."""

from __future__ import annotations

import json

import pytest

from diagnostics import error_codes

DATA = json.loads(error_codes.TABLE.read_text(encoding="utf-8"))


def test_the_table_covers_every_ras_code_and_the_ike_codes_vpn_users_see():
    have = set(error_codes.codes())
    # raserror.h ends at 877 (Windows 11's message table); 878-899 are not defined by Windows.
    assert set(range(600, 878)) <= have
    assert set(range(13801, 13871)) <= have


def test_every_row_names_a_source_that_the_table_cites():
    sources = DATA["sources"]
    assert all(len(text) > 40 for text in sources.values())
    for row in DATA["codes"]:
        assert row["source"] in sources, row["code"]
        assert row["en"].strip(), row["code"]
        if row.get("ja"):
            assert row.get("ja_source"), row["code"]


def test_codes_are_unique():
    codes = [row["code"] for row in DATA["codes"]]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("code", "start"),
    [
        (809, "The network connection between your computer and the VPN server could not"),
        (811, "The network conection between"),  # Microsoft's own typo, kept
        (789, "The L2TP connection attempt failed because the security layer encountered"),
        (13868, "Policy match error."),
    ],
)
def test_the_english_is_windows_own_wording(code, start):
    assert error_codes.meaning(code, "en").text.startswith(start)


def test_japanese_falls_back_to_english_and_says_so():
    found = error_codes.meaning(629, "ja")
    assert found.lang == "en"
    assert found.text == "The connection was closed by the remote computer."


def test_a_sourced_japanese_text_is_served_in_japanese_with_its_source():
    found = error_codes.meaning(721, "ja")
    assert found.lang == "ja" and found.text == "リモート コンピューターが応答していません。"
    assert "888201" in found.source


def test_an_undefined_number_has_no_meaning():
    assert error_codes.meaning(880) is None
    assert error_codes.meaning(12345) is None
