"""The matcher: normalisation, error codes, ranking, the no-match path and the index cache.

Pure logic, no database: the articles below are written from docs/kb-format.md and the
Microsoft message texts in facts/windows-vpn.md section 2. Once kb/ ships, every shipped
article must also be found first by its own signatures (the last tests).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnostics import matching
from diagnostics.matching import (
    MAX_CHARS,
    THRESHOLD,
    Notice,
    NoticeKind,
    Reason,
    ReasonKind,
    build_index,
    extract_codes,
    match,
    normalize,
)

MSG_789_EN = (
    "The L2TP connection attempt failed because the security layer encountered a processing "
    "error during initial negotiations with the remote computer."
)
MSG_789_JA = (
    "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが"
    "検出されたため、L2TP接続に失敗しました。"
)
MSG_791_EN = (
    "The L2TP connection attempt failed because security policy for the connection was not found."
)
MSG_791_JA = "この接続のセキュリティ ポリシーが見つからなかったため、L2TP 接続に失敗しました。"
MSG_787_EN = (
    "The L2TP connection attempt failed because the security layer could not authenticate the "
    "remote computer."
)
MSG_809_EN = (
    "The network connection between your computer and the VPN server could not be established "
    "because the remote server is not responding. This could be because one of the network "
    "devices (e.g, firewalls, NAT, routers, etc) between your computer and the remote server is "
    "not configured to allow VPN connections. Please contact your Administrator or your service "
    "provider to determine which device may be causing the problem."
)
MSG_868_EN = (
    "The remote connection was not made because the name of the remote access server did not "
    "resolve."
)

EVENT_20227 = (
    "The user SYSTEM dialed a connection named VPN which has failed. The error code returned "
    "on failure is {code}."
)


def _article(slug: str, codes: list[int], en: str, ja: str | None = None, **extra) -> dict:
    sigs = [{"lang": "en", "text": en, "source": "mprmsg.dll", "verified": True}]
    if ja:
        sigs.append({"lang": "ja", "text": ja, "source": "seed article", "verified": False})
    for code in codes:
        sigs.append({"lang": "en", "text": EVENT_20227.format(code=code), "source": "RasClient"})
    return {
        "slug": slug,
        "status": extra.pop("status", "published"),
        "error_codes": codes,
        "title": {"ja": f"{slug} (ja)", "en": f"{slug} (en)"},
        "signatures": sigs,
        **extra,
    }


ARTICLES = [
    {
        **_article("l2tp-ipsec-psk-negotiation", [789, 791], MSG_789_EN, MSG_789_JA),
        "title": {
            "ja": "L2TP/IPsec 接続がセキュリティ層で失敗する",
            "en": "L2TP/IPsec fails in the security layer",
        },
    },
    _article("l2tp-remote-auth-failed", [787], MSG_787_EN),
    _article("vpn-server-not-responding", [809], MSG_809_EN),
    _article("vpn-server-name-not-resolved", [868], MSG_868_EN),
    _article("draft-article", [999], "A draft article nobody should see.", status="draft"),
]
ARTICLES[0]["signatures"] += [
    {"lang": "en", "text": MSG_791_EN, "source": "mprmsg.dll", "verified": True},
    {"lang": "ja", "text": MSG_791_JA, "source": "seed article", "verified": False},
]


@pytest.fixture(scope="module")
def index() -> matching.Index:
    return build_index(ARTICLES)


def _top(index: matching.Index, text: str) -> str | None:
    result = match(index, text)
    return result.matches[0].article if result.confident else None


# --- normalisation ---------------------------------------------------------------------------


def test_normalize_turns_full_width_digits_letters_and_spaces_into_ascii():
    assert normalize("ＶＰＮ　エラー　７８９") == "vpnエラー789"


def test_normalize_folds_case():
    assert normalize("L2TP Connection FAILED") == "l2tp connection failed"


def test_normalize_joins_line_breaks_inside_a_japanese_sentence():
    assert normalize("ネゴシエート\r\nするときに") == normalize("ネゴシエートするときに")


def test_normalize_keeps_one_space_between_english_words_across_line_breaks():
    assert normalize("security\n  layer") == "security layer"


def test_normalize_ignores_spaces_microsoft_puts_inside_japanese_text():
    assert normalize("セキュリティ ポリシー、L2TP 接続") == normalize(
        "セキュリティポリシー、L2TP接続"
    )


def test_normalize_gives_quote_and_punctuation_variants_one_form():
    assert normalize("「接続」“x” ‘y’") == normalize('"接続""x" "y"')
    assert normalize("エラー：789。") == "エラー:789."
    assert normalize("a–b—c") == "a-b-c"


def test_normalize_composes_half_width_katakana_with_voicing_marks():
    assert normalize("ｴﾗｰ ｶﾞ") == "エラーガ"


def test_normalize_drops_greetings_and_lead_ins():
    assert (
        normalize("お疲れ様です。エラー789がでます。よろしくお願いします") == ".エラー789がでます."
    )
    assert normalize("Hi, please help! error 809") == "error 809"


# --- error codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("エラー 789", [789]),
        ("エラー：789", [789]),
        ("エラー789", [789]),
        ("エラー　７８９", [789]),
        ("エラーコード: 809", [809]),
        ("Error 789: The L2TP connection attempt failed", [789]),
        ("Remote Access error 789 - The L2TP connection attempt failed", [789]),
        ("The error code returned on failure is 809.", [809]),
        ("失敗時に返されたエラー コードは 809 です。", [809]),
        ("error code: 0x80070315", [789]),
        ("エラー 0x80070329", [809]),
        ("HRESULT 0x800735E9 from the IKE module", [13801]),
        ("IKE failed: error 13806", [13806]),
        ("朝からVPNがつながらない、エラー789", [789]),
        ("VPNで809がでる", [809]),
        ("809 and then 789", [809, 789]),
        ("I received error 741/742, which says there is an encryption mismatch error", [741, 742]),
    ],
)
def test_extract_codes_reads_every_form_users_paste(text, codes):
    assert extract_codes(text) == codes


@pytest.mark.parametrize(
    "text",
    [
        "connected to 10.0.7.89 at 2024-07-08 8:09",
        "UDP 500 and 4500 are open, 1701 too",
        "since 2024 it fails",
        "CoId={A1B2C3D4-0789-4E5F-8090-ABCDEF012345}",
        "at 07:89 and 8:09",
        "build 19041.789",
    ],
)
def test_extract_codes_ignores_addresses_times_years_ports_and_guids(text):
    assert extract_codes(text) == []


def test_extract_codes_prefers_the_keyword_form_over_a_bare_number():
    text = "RasClient event 20227 at 09:15, port 4500, 700 users affected: error 809"
    assert extract_codes(text) == [809]


def test_extract_codes_reads_a_rasclient_event():
    text = (
        "CoId={5E2A1C2B-7F3D-4B89-9F0C-1D2E3F405162}: The user SYSTEM dialed a connection named "
        "Office VPN which has failed. The error code returned on failure is 789."
    )
    assert extract_codes(text) == [789]


def test_extract_codes_reads_rasdial_output():
    text = (
        "Connecting to Office VPN...\nVerifying username and password...\n"
        "Remote Access error 809 - The network connection between your computer and the VPN "
        "server could not be established\n\nFor more help on this error:\n"
        "        Type 'hh netcfg.chm'\n        In help, click Troubleshooting, then Error "
        "Messages, then 809\n"
    )
    assert extract_codes(text) == [809]


# --- ranking ---------------------------------------------------------------------------------


def test_microsoft_message_in_english_finds_its_article(index):
    assert _top(index, MSG_787_EN) == "l2tp-remote-auth-failed"


def test_microsoft_message_in_japanese_finds_its_article(index):
    assert _top(index, MSG_791_JA) == "l2tp-ipsec-psk-negotiation"


def test_half_copied_japanese_line_with_chatter_and_line_breaks_finds_its_article(index):
    text = (
        "お疲れ様です。\nリモートコンピューターと最初にネゴシエート\nするときに、セキュリティ層で"
    )
    assert _top(index, text) == "l2tp-ipsec-psk-negotiation"


def test_own_words_with_a_code_find_the_article_for_that_code(index):
    result = match(index, "朝からVPNがつながらない、エラー789")
    assert result.confident
    assert result.matches[0].article == "l2tp-ipsec-psk-negotiation"
    assert result.matches[0].reasons == (Reason(ReasonKind.CODE, code=789),)
    assert result.matches[0].highlight == ["エラー789"]


def test_a_code_outweighs_a_vague_text_match_for_another_article(index):
    # The words are close to the 787 message, but only vaguely; the pasted code is 809.
    result = match(index, "L2TP connection attempt failed, error 809")
    assert result.matches[0].article == "vpn-server-not-responding"


def test_a_clear_text_match_beats_a_code_for_another_article(index):
    # A user copies the 787 dialog but types the code of yesterday's error.
    result = match(index, f"error 809 {MSG_787_EN}")
    assert [m.article for m in result.matches[:2]] == [
        "l2tp-remote-auth-failed",
        "vpn-server-not-responding",
    ]


def test_code_and_text_together_score_higher_than_either(index):
    both = match(index, f"Error 868: {MSG_868_EN}").matches[0]
    code_only = match(index, "Error 868").matches[0]
    text_only = match(index, MSG_868_EN).matches[0]
    assert both.article == code_only.article == text_only.article
    assert both.score > max(code_only.score, text_only.score)


def test_why_and_highlight_quote_the_original_pasted_text(index):
    text = "ＶＰＮ接続で\n「この接続のセキュリティ ポリシーが見つからなかったため」と出ます"
    best = match(index, text).matches[0]
    assert best.article == "l2tp-ipsec-psk-negotiation"
    assert best.reasons[0].kind == ReasonKind.PHRASE
    assert best.reasons[0].text in " ".join(text.split())
    assert best.highlight
    assert all(piece in text for piece in best.highlight)


def test_title_comes_in_the_requested_language(index):
    assert match(index, "error 789", lang="en").matches[0].title == (
        "L2TP/IPsec fails in the security layer"
    )
    assert match(index, "error 789", lang="ja").matches[0].title == (
        "L2TP/IPsec 接続がセキュリティ層で失敗する"
    )


def test_draft_articles_are_never_matched(index):
    result = match(index, "error 999: A draft article nobody should see.")
    assert all(m.article != "draft-article" for m in result.matches)


def test_top_limits_the_number_of_matches(index):
    assert len(match(index, MSG_789_EN, top=2).matches) <= 2


# --- no match --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Outlook cannot connect to the Exchange server. Check your network connection.",
        "The printer is offline. エラー状態のプリンター",
        "Windows Update error 0x80070643 while installing KB5034441",
        "asdkjh qwpeoiru zxmcnv",
        "VPNがつながらない",
    ],
)
def test_unrelated_text_gets_no_confident_match(index, text):
    assert not match(index, text).confident


def test_no_confident_match_still_returns_the_nearest_candidates(index):
    result = match(index, "L2TP connection failed")
    assert not result.confident
    assert result.matches
    assert result.matches[0].score < THRESHOLD


def test_empty_or_blank_text_says_no_text(index):
    for text in ("", "   \n\t", "。、「」"):
        result = match(index, text)
        assert result.matches == [] and not result.confident
        assert result.notices == (Notice(NoticeKind.NO_TEXT),)


def test_an_unknown_code_is_said_plainly(index):
    result = match(index, "Remote Access error 651")
    assert result.codes == [651]
    assert not result.confident
    assert result.uncovered == [651]
    assert result.notices == (Notice(NoticeKind.CODES_NOT_IN_KB, codes=(651,)),)


def test_an_event_whose_code_no_article_has_matches_nothing_confidently(index):
    # Every article carries the 20227 template; without its number it names no article.
    result = match(index, "CoId={A1}: " + EVENT_20227.format(code=13843))
    assert result.codes == [13843]
    assert not result.confident


def test_an_event_with_a_known_code_finds_that_article_first(index):
    result = match(index, EVENT_20227.format(code=868))
    assert result.confident
    assert result.matches[0].article == "vpn-server-name-not-resolved"


def test_huge_input_is_cut_and_says_so(index):
    text = MSG_789_EN + " x" * 600_000
    result = match(index, text)
    assert result.notices == (Notice(NoticeKind.CUT, limit=MAX_CHARS),)
    assert result.matches[0].article == "l2tp-ipsec-psk-negotiation"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=400)
    | st.text(alphabet="エラー789０１２ 0x8007 \n、。「」L2TPerror", max_size=200)
    | st.builds(lambda a, b: a + MSG_789_JA[:30] + b, st.text(max_size=50), st.text(max_size=50))
)
def test_no_input_raises_and_scores_stay_between_0_and_1(text):
    index = build_index(ARTICLES)
    result = match(index, text)
    assert all(0.0 <= m.score <= 1.0 for m in result.matches)
    assert result.confident == bool(result.matches and result.matches[0].score >= THRESHOLD)
    assert all(piece in text for m in result.matches for piece in m.highlight)
    assert isinstance(extract_codes(text), list)


# --- the shipped knowledge base --------------------------------------------------------------

KB_DIR = Path(__file__).resolve().parent.parent / "kb"


def _shipped() -> list[dict]:
    if not any(KB_DIR.glob("*.yaml")):
        return []
    from diagnostics import kb

    return [a for a in kb.load_dir(KB_DIR) if a.get("status", "published") == "published"]


SHIPPED = _shipped()


@functools.cache
def _shipped_index() -> matching.Index:
    return build_index(SHIPPED)


def _message_cases() -> list[tuple[str, str, str]]:
    cases = []
    for article in SHIPPED:
        for lang in ("en", "ja"):
            sigs = [s for s in article.get("signatures") or [] if s.get("lang") == lang]
            if sigs:
                # The longest one is the dialog message; short ones are rasdial/event forms.
                text = max(sigs, key=lambda s: len(s["text"]))["text"]
                cases.append((article["slug"], lang, text))
    return cases


def _signature_cases() -> list[tuple[str, str, str]]:
    return [
        (article["slug"], sig["lang"], sig["text"])
        for article in SHIPPED
        for sig in article.get("signatures") or []
    ]


@pytest.mark.parametrize(("slug", "lang", "text"), _signature_cases() or [("", "", "")])
def test_every_signature_in_every_form_finds_its_article(slug, lang, text):
    """Message, rasdial line, RasClient event and own words: each one finds its article."""
    result = match(_shipped_index(), text, lang=lang)
    assert result.confident
    top_score = result.matches[0].score
    assert slug in [m.article for m in result.matches if m.score == top_score]


# Near-identical messages: the words only one of them has decide. The Japanese texts are a
# second rendering of Microsoft's English (not the KB's own wording): what a differently
# translated dialog would say.
PAIRS = [
    (
        "vpn-server-not-responding",
        "vpn-preshared-key-problem",
        "The network connection between your computer and the VPN server could not be "
        "established because the remote server is not responding. This could be because one of "
        "the network devices (e.g, firewalls, NAT, routers, etc) between your computer and the "
        "remote server is not configured to allow VPN connections.",
    ),
    (
        "vpn-preshared-key-problem",
        "vpn-server-not-responding",
        "The network conection between your computer and the VPN server could not be "
        "established because the remote server is not responding.  This is typically caused by "
        "a pre-shared key problem between the client and server.",
    ),
    (
        "vpn-server-not-responding",
        "vpn-preshared-key-problem",
        "リモート サーバーが応答しないため、お使いのコンピューターと VPN サーバー間のネットワーク接続を"
        "確立できませんでした。これは、コンピューターとリモート サーバー間のネットワーク デバイス "
        "(ファイアウォール、NAT、ルーターなど) のいずれかが VPN 接続を許可するように構成されていない"
        "ことが原因である可能性があります。",
    ),
    (
        "vpn-preshared-key-problem",
        "vpn-server-not-responding",
        "リモート サーバーが応答しないため、お使いのコンピューターと VPN サーバー間のネットワーク接続を"
        "確立できませんでした。これは通常、クライアントとサーバー間の事前共有キーの問題が原因で"
        "発生します。",
    ),
    (
        "l2tp-remote-authentication-failed",
        "l2tp-ipsec-parameters-mismatch",
        "The L2TP connection attempt failed because the security layer could not authenticate "
        "the remote computer.",
    ),
    (
        "l2tp-ipsec-parameters-mismatch",
        "l2tp-remote-authentication-failed",
        "The L2TP connection attempt failed because the security layer could not negotiate "
        "compatible parameters with the remote computer.",
    ),
    (
        "l2tp-ipsec-parameters-mismatch",
        "l2tp-ipsec-psk-negotiation",
        "L2TP 接続に失敗しました。セキュリティ層がリモート コンピューターと互換性のあるパラメーターを"
        "ネゴシエートできませんでした。",
    ),
    (
        "l2tp-ipsec-psk-negotiation",
        "l2tp-ipsec-parameters-mismatch",
        "L2TP 接続に失敗しました。リモート コンピューターとの最初のネゴシエーション中に、セキュリティ層で"
        "処理エラーが発生しました。",
    ),
]


PAIRS += [
    (
        "vpn-preshared-key-problem",
        "vpn-server-not-responding",
        "リモート サーバーが応答しないため、コンピューターと VPN サーバーの間のネットワーク接続を"
        "確立できませんでした。通常、これはクライアントとサーバーの事前共有キーの問題が原因です。",
    ),
]


def test_only_the_sentence_809_and_811_share_tells_neither_apart():
    text = (
        "リモート サーバーが応答しないため、コンピューターと VPN サーバーの間のネットワーク接続を"
        "確立できませんでした。"
    )
    result = match(_shipped_index(), text)
    assert not result.confident
    assert {m.article for m in result.matches[:2]} == {
        "vpn-server-not-responding",
        "vpn-preshared-key-problem",
    }


@pytest.mark.parametrize(("own", "rival", "text"), PAIRS)
def test_near_identical_messages_are_told_apart_by_their_own_words(own, rival, text):
    result = match(_shipped_index(), text)
    assert result.confident
    assert result.matches[0].article == own
    scores = {m.article: m.score for m in result.matches}
    assert scores[own] - scores.get(rival, 0.0) >= 0.02


@pytest.mark.parametrize(
    ("text", "confident"),
    [
        # Issue #12: the seed's error described in Japanese in different words.
        (
            "L2TP/IPsec で接続すると、最初のネゴシエーションでセキュリティ層のエラーになって失敗する",
            True,
        ),
        ("セキュリティ層でエラー", True),
        ("最初のネゴシエーションで失敗", True),
        ("VPN(L2TP)が繋がらない。セキュリティレイヤーで処理エラーと出ます", True),
        ("L2TPで繋がらない", False),  # names only the protocol: first, not an answer
    ],
)
def test_japanese_paraphrases_of_the_seed_error_find_the_seed(text, confident):
    result = match(_shipped_index(), text)
    assert result.matches[0].article == "l2tp-ipsec-psk-negotiation"
    assert result.confident is confident


@pytest.mark.parametrize("text", ["VPNがつながらない", "VPNに接続できない", "VPN doesn't connect"])
def test_a_vague_complaint_gets_no_confident_article(text):
    assert not match(_shipped_index(), text).confident


@pytest.mark.parametrize(("slug", "lang", "text"), _message_cases() or [("", "", "")])
def test_each_shipped_article_is_found_first_by_its_own_message(slug, lang, text):
    shipped_index = _shipped_index()
    result = match(shipped_index, text, lang=lang)
    assert result.confident
    top_score = result.matches[0].score
    best = [m.article for m in result.matches if m.score == top_score]
    assert slug in best


def test_each_shipped_article_has_a_message_in_both_languages():
    missing = [
        (a["slug"], lang)
        for a in SHIPPED
        for lang in ("en", "ja")
        if not any(s.get("lang") == lang for s in a.get("signatures") or [])
    ]
    assert missing == []


# --- codes first: a code no article covers is never answered by another article ---------------


def _uncovered_forms(code: int, message: str) -> list[str]:
    return [
        f"Remote Access error {code} - {message}",  # rasdial
        (
            f"Connecting to Office VPN...\nRemote Access error {code} - {message}\n\n"
            f"For more help on this error:\n        Type 'hh netcfg.chm'\n"
            f"        In help, click Troubleshooting, then Error Messages, then {code}\n"
        ),
        f"Error {code}: {message}",  # the error dialog
        "CoId={5E2A1C2B-7F3D-4B89-9F0C-1D2E3F405162}: " + EVENT_20227.format(code=code),
        f"VPNに接続できません。エラー{code}が出ます。{message}",  # own words around it
        f"{message} (error code: {code})",
    ]


def test_a_code_outside_the_kb_is_never_confident_in_any_form():
    from diagnostics import error_codes

    shipped = _shipped_index()
    confident = []
    for code in error_codes.codes():
        if code in shipped.by_code or not (600 <= code <= 899 or 13801 <= code <= 13870):
            continue
        for text in _uncovered_forms(code, error_codes.meaning(code).text):
            result = match(shipped, text)
            assert result.uncovered == [code]
            if result.confident:
                confident.append((code, text[:60], result.matches[0].article))
    assert confident == []


def test_a_covered_code_next_to_an_uncovered_one_still_finds_its_article(index):
    result = match(index, "error 651, then error 789")
    assert result.confident and result.matches[0].article == "l2tp-ipsec-psk-negotiation"
    assert result.uncovered == [651]
