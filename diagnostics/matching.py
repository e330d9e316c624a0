"""Pasted error text -> ranked knowledge-base articles (pure functions, no ORM, no network).

Employees paste a dialog's text in Japanese or English, ``rasdial`` output, a RasClient event,
a half-copied line with full-width digits or their own words. The pipeline:

1. ``normalize``: NFKC per grapheme cluster (full-width digits, spaces, half-width katakana),
   case fold, one space for any run of whitespace, no space next to Japanese text (Japanese has
   no word spaces; Microsoft's own strings are inconsistent about them), one form for quotes,
   dashes and Japanese punctuation, greetings and lead-ins ("お疲れ様です", "please help") dropped.
   A map from every normalised character back to the pasted text gives the page its highlights.
2. ``extract_codes``: error codes from the forms users paste; bare numbers only when no keyword
   form exists and they sit in the RAS (600-999) or IKE (13800-13999) range and are not part of
   an address, time, date or GUID.
3. Text similarity: rapidfuzz's ``partial_ratio`` (best-aligned window, so it works for Japanese
   with no spaces and for English alike, and tolerates chatter around the message and cut-off
   halves) on a compact form (letters and digits only). A character-trigram inverted index picks
   the candidates first, so the cost stays bounded at 10,000 signatures.
4. Score: an article whose code was pasted starts at ``CODE_BASE`` and text adds to it; text alone
   can reach ``TEXT_ONLY_MAX``, which is above ``CODE_BASE``: a clear text match for another
   article beats a bare code, a vague one does not.
5. Codes first: when the paste names codes and no article covers any of them, no article is
   confident (scores are capped under ``THRESHOLD``): an explicit code is the strongest evidence
   a paste carries, and an article for another code must never win against it. The caller
   shows the code's meaning from Windows' own table (``diagnostics/error_codes.py``).
6. Near-identical messages (809 / 811 share their first sentence): when two articles' signatures
   are both close to the paste, the words only one of them has decide (``_rival_factor``).

The result carries structured reasons and notices (``Reason``, ``Notice``), never sentences:
the view, the template and ``kb_match`` word them in the reader's language.
"""

from __future__ import annotations

import functools
import heapq
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from rapidfuzz import fuzz

THRESHOLD: float = 0.45  # dev set: negatives top out at 0.19, clear pastes start at 0.51
MAX_CHARS = 10_000
CODE_BASE = 0.72  # a pasted code alone: confident, but beatable by a clear text match
TEXT_ONLY_MAX = 0.95
TITLE_WEIGHT = 0.9  # a title is our wording, not Windows': a little less evidence
CANDIDATES = 24  # signatures scored with rapidfuzz after the trigram prefilter
NGRAM = 3
# A paste naming only codes no article covers: every article stays under the threshold.
UNCOVERED_CAP = THRESHOLD - 0.05
# Two close signatures of different articles are rivals when this share of what the paste has
# in common with either is common to both (a paste of 809's or 811's shared first sentence).
RIVAL_CONTAINMENT = 0.6
# A rival none of whose own words the paste has keeps this share of its score: the paste does
# not tell it from the other, so neither should reach the threshold on those words alone.
RIVAL_FLOOR = 0.5

# ---------------------------------------------------------------------------------------------
# Normalisation

_CJK_RANGES = (
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),  # half-width katakana (before NFKC)
)
_QUOTES = "\"'`´‘’‚‛“”„‟«»‹›「」『』〈〉《》【】〔〕〝〞〟"
_DASHES = "‐‑‒–—―−﹘﹣"
_PUNCT_MAP = {"、": ",", "。": ".", "・": " ", "…": "...", "〜": "~", "～": "~"}
_PUNCT_MAP.update({q: '"' for q in _QUOTES})
_PUNCT_MAP.update({d: "-" for d in _DASHES})
_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}

# Greetings and lead-ins around the pasted message. Removing them keeps them from diluting the
# similarity of a short paste; every phrase here is absent from Windows' error messages.
_CHATTER = re.compile(
    r"お疲れ様です|お疲れさまです|おつかれさまです|お世話になっております|お世話になります|"
    r"こんにちは|こんばんは|おはようございます|すみません|すいません|助けてください|"
    r"よろしくお願い(?:いた)?します|宜しくお願い(?:いた)?します|よろしくです|至急|"
    r"以下のエラーが(?:出|表示され)(?:ます|ました)|次のエラーが(?:出|表示され)(?:ます|ました)|"
    r"というエラーが(?:出|表示され)(?:ます|ました|ています|る)|と(?:出|表示され)(?:ます|ました|ています)|"
    r"\b(?:hi|hello|hey|thanks|thank you|please help(?: me)?|help me|urgent|regards)\b[!,.]*|"
    r"\bi(?:'m| am) getting (?:this|the following) error\b:?|\bi get (?:this|the following) error\b:?|"
    r"\b(?:this|the following) error (?:appears|pops up|shows up|is shown)\b:?"
)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


def _clusters(text: str) -> list[tuple[int, int]]:
    """(start, end) of each base character with its combining marks (and half-width voicing)."""
    spans: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        joins = unicodedata.combining(ch) or ch in "\uff9e\uff9f\u3099\u309a"
        if spans and joins:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


@functools.lru_cache(maxsize=8192)
def _fold_cluster(piece: str) -> str:
    folded = unicodedata.normalize("NFKC", piece).casefold()
    out = []
    for ch in folded:
        if ch in _ZERO_WIDTH:
            continue
        if ch in _PUNCT_MAP:
            out.append(_PUNCT_MAP[ch])
        elif ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co"):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _normalize_mapped(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Normalised text and, for each of its characters, the (start, end) it came from."""
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    for start, end in _clusters(text):
        for ch in _fold_cluster(text[start:end]):
            chars.append(ch)
            spans.append((start, end))
    chars, spans = _drop_chatter(chars, spans)
    return _squeeze_spaces(chars, spans)


def _drop_chatter(
    chars: list[str], spans: list[tuple[int, int]]
) -> tuple[list[str], list[tuple[int, int]]]:
    joined = "".join(chars)
    keep = [True] * len(chars)
    for m in _CHATTER.finditer(joined):
        for i in range(m.start(), m.end()):
            keep[i] = False
    if all(keep):
        return chars, spans
    return (
        [c for c, k in zip(chars, keep, strict=True) if k],
        [s for s, k in zip(spans, keep, strict=True) if k],
    )


def _squeeze_spaces(
    chars: list[str], spans: list[tuple[int, int]]
) -> tuple[str, list[tuple[int, int]]]:
    out: list[str] = []
    out_spans: list[tuple[int, int]] = []
    n = len(chars)
    i = 0
    while i < n:
        if chars[i] != " ":
            out.append(chars[i])
            out_spans.append(spans[i])
            i += 1
            continue
        j = i
        while j < n and chars[j] == " ":
            j += 1
        # One space survives only between two non-Japanese characters: a line break inside a
        # Japanese sentence, or "L2TP 接続" vs "L2TP接続", must not change the text.
        if out and j < n and not _is_cjk(out[-1]) and not _is_cjk(chars[j]):
            out.append(" ")
            out_spans.append(spans[i])
        i = j
    return "".join(out), out_spans


def normalize(text: str) -> str:
    """Return ``text`` in the form both the index and pasted texts are compared in.

    NFKC (full-width digits and spaces become ASCII), case folded, whitespace runs (line
    breaks included) become one space and vanish next to Japanese text, quote/dash/Japanese
    punctuation variants get one form, and greetings/lead-ins around the message are dropped.
    """
    return _normalize_mapped(text)[0]


def _compact_mapped(
    norm: str, spans: Sequence[tuple[int, int]]
) -> tuple[str, list[tuple[int, int]]]:
    """Letters only: what the similarity compares.

    Punctuation is noise there, and so are digits: codes count through ``extract_codes``, and
    "...returned on failure is 789" must not look like a different text from "... is 809".
    """
    keep = [i for i, ch in enumerate(norm) if _is_text_char(ch)]
    return _fold_variants("".join(norm[i] for i in keep), [spans[i] for i in keep])


def _is_text_char(ch: str) -> bool:
    return ch.isalnum() and not ch.isdigit()


# Ways people write the same Japanese word (kanji or kana, a katakana word with or without its
# final long-vowel mark: サーバー / サーバ, コンピューター / コンピュータ, レイヤー / レイヤ), folded
# to one spelling on both sides. Microsoft's messages say ネゴシエート; people write
# ネゴシエーション or 交渉, and セキュリティレイヤー for セキュリティ層; 接続できない and
# つながらない say the same thing.
_JA_VARIANTS = {
    "繋": "つな",
    "接続できない": "つながらない",
    "接続ができない": "つながらない",
    "接続ができません": "つながりません",
    "接続出来ない": "つながらない",
    "接続できません": "つながりません",
    "接続出来ません": "つながりません",
    "出来": "でき",
    "ネゴシエーション": "ネゴシエート",
    "交渉": "ネゴシエート",
    "セキュリティーレイヤー": "セキュリティ層",
    "セキュリティレイヤー": "セキュリティ層",
    "セキュリティレイヤ": "セキュリティ層",
    "セキュリティー": "セキュリティ",
    "事前共有鍵": "事前共有キ",
    "プレシェアードキー": "事前共有キ",
}
_JA_VARIANT_RE = re.compile(
    "|".join(re.escape(k) for k in sorted(_JA_VARIANTS, key=len, reverse=True))
    + r"|(?<=[\u30a1-\u30fa])ー(?![\u30a1-\u30fc])"
)


def _fold_variants(compact: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list]:
    """``compact`` with Japanese spelling variants folded; each new character keeps a span."""
    if not any(_is_cjk(ch) for ch in compact):
        return compact, list(spans)
    out: list[str] = []
    out_spans: list = []
    last = 0
    for m in _JA_VARIANT_RE.finditer(compact):
        out.extend(compact[last : m.start()])
        out_spans.extend(spans[last : m.start()])
        repl = _JA_VARIANTS.get(m.group(0), "")
        if repl:
            lo, hi = spans[m.start()][0], spans[m.end() - 1][1]
            out.extend(repl)
            out_spans.extend([(lo, hi)] * len(repl))
        last = m.end()
    out.extend(compact[last:])
    out_spans.extend(spans[last:])
    return "".join(out), out_spans


def _compact(text: str) -> str:
    compact = "".join(ch for ch in normalize(text) if _is_text_char(ch))
    return _fold_variants(compact, [(0, 0)] * len(compact))[0]


# ---------------------------------------------------------------------------------------------
# Error codes

_NUM = r"(0x[0-9a-f]{1,8}|\d{3,5})(?![0-9a-f]*[0-9]|[.:/]\d)"
_STRONG_CODE = re.compile(
    # "error 789", "Error 789:", "Remote Access error 789", "エラー789", "エラー:789",
    # "エラーコード:809", "error code: 0x80070315", "失敗時に返されたエラーコードは809です"
    r"(?:error|err|エラー|ｴﾗｰ)\s*(?:code|コード|番号|no\.?|number|#)?\s*(?:is|は|=|:|-|#)?\s*"
    + _NUM
    # "The error code returned on failure is 789", "The reason code returned on termination is 829"
    + r"|(?:code|コード)\s*returned on (?:failure|termination) is\s*"
    + _NUM
    + r"|(?:code|コード)\s*(?:is|は|=|:)?\s*"
    + _NUM
)
# Two codes written as one ("error 741/742", Microsoft's own page does it): both count.
_CODE_PAIR = re.compile(
    r"(?:error|err|エラー)\s*(?:code|コード)?\s*(\d{3,5})\s*/\s*(\d{3,5})(?![0-9/])"
)
# An HRESULT anywhere in the text ("0x80070315"), even without a keyword.
_HRESULT = re.compile(r"(?<![0-9a-z])0x([0-9a-f]{8})(?![0-9a-z])")
# A bare number, not glued to letters, digits, or address/time/date/GUID punctuation.
_BARE = re.compile(r"(?<![0-9a-z_./:\\\-])(\d{3,5})(?![0-9a-z_/\\]|[.:\-]\d)")


def _code_value(token: str) -> int | None:
    if token.startswith("0x"):
        value = int(token, 16)
        # HRESULT_FROM_WIN32: 0x8007xxxx carries the Win32/RAS code in its low 16 bits.
        if value >> 16 in (0x8007, 0x0000):
            return value & 0xFFFF
        return None
    return int(token)


def _is_ras_range(code: int) -> bool:
    return 600 <= code <= 999 or 13800 <= code <= 13999


def _codes_with_spans(norm: str) -> list[tuple[int, int, int]]:
    """(code, start, end) in ``norm``: keyword forms and HRESULTs, else plausible bare numbers."""
    found: list[tuple[int, int, int]] = []
    for m in _STRONG_CODE.finditer(norm):
        group = next(g for g in range(1, 4) if m.group(g))
        value = _code_value(m.group(group))
        if value is not None and value > 0:
            found.append((value, m.start(), m.end()))
    for m in _CODE_PAIR.finditer(norm):
        for group in (1, 2):
            found.append((int(m.group(group)), m.start(group), m.end(group)))
    for m in _HRESULT.finditer(norm):
        value = _code_value("0x" + m.group(1))
        if value is not None and value > 0:
            found.append((value, m.start(), m.end()))
    if not found:
        # Years, times, addresses and ports (500/4500/1701) fall outside these ranges or fail
        # the boundary test; only then is a bare "809" in "朝から809が出る" taken.
        for m in _BARE.finditer(norm):
            value = int(m.group(1))
            if _is_ras_range(value):
                found.append((value, m.start(1), m.end(1)))
    found.sort(key=lambda f: f[1])
    return found


def extract_codes(text: str) -> list[int]:
    """Error codes in ``text``, in order of first appearance, each once."""
    norm = normalize(text[:MAX_CHARS])
    return list(dict.fromkeys(code for code, _, _ in _codes_with_spans(norm)))


# ---------------------------------------------------------------------------------------------
# Index


@dataclass(frozen=True)
class _Signature:
    article: int  # position in Index.articles
    compact: str
    weight: float  # 1.0 for a signature, TITLE_WEIGHT for a title
    kind: str  # "signature" | "title"
    grams: int  # distinct trigrams, for the prefilter's containment ratio
    enough: int  # matched characters that make a fragment conclusive (fewer for Japanese)


@dataclass(frozen=True)
class _Article:
    slug: str
    titles: dict[str, str]
    codes: list[int]


@dataclass(frozen=True)
class Index:
    """Everything ``match`` needs, built once per KB version by ``build_index``."""

    articles: list[_Article]
    signatures: list[_Signature]
    postings: dict[str, list[int]]  # trigram -> signature ids
    by_code: dict[int, list[int]]  # error code -> article positions
    max_df: int  # trigrams in more signatures than this say nothing and are skipped


def _ngrams(compact: str) -> set[str]:
    if len(compact) < NGRAM:
        return {compact} if compact else set()
    return {compact[i : i + NGRAM] for i in range(len(compact) - NGRAM + 1)}


def _shared_texts(articles: list[dict]) -> set[str]:
    """Signature texts that several articles carry once their codes are ignored.

    Every article lists the RasClient 20227 event ("...The error code returned on failure is
    N."); without its number that text cannot tell articles apart, so only the code counts.
    """
    owners: dict[str, set[str]] = {}
    for art in articles:
        for sig in art.get("signatures") or []:
            owners.setdefault(_compact(str(sig.get("text", ""))), set()).add(str(art["slug"]))
    return {text for text, slugs in owners.items() if len(slugs) > 1}


def build_index(articles: list[dict]) -> Index:
    """Index the articles' signatures and titles (both languages) and their error codes.

    ``articles`` are dicts as ``diagnostics/kb.py`` loads them (docs/kb-format.md). Draft
    articles are skipped; an article without a status counts as published.
    """
    arts: list[_Article] = []
    sigs: list[_Signature] = []
    by_code: dict[int, list[int]] = {}
    published = [a for a in articles if a.get("status", "published") == "published"]
    shared = _shared_texts(published)
    for art in published:
        pos = len(arts)
        title = art.get("title") or {}
        codes = [int(c) for c in art.get("error_codes") or []]
        arts.append(_Article(str(art["slug"]), dict(title), codes))
        for code in codes:
            by_code.setdefault(code, []).append(pos)
        texts = [(s.get("text", ""), 1.0, "signature") for s in art.get("signatures") or []]
        texts += [(t, TITLE_WEIGHT, "title") for t in title.values()]
        seen: set[str] = set()
        for text, weight, kind in texts:
            compact = _compact(str(text))
            if len(compact) >= 2 and compact not in seen and compact not in shared:
                seen.add(compact)
                sigs.append(
                    _Signature(pos, compact, weight, kind, len(_ngrams(compact)), _enough(compact))
                )
    postings: dict[str, list[int]] = {}
    for sid, sig in enumerate(sigs):
        for gram in _ngrams(sig.compact):
            postings.setdefault(gram, []).append(sid)
    max_df = max(50, len(sigs) // 40)
    return Index(arts, sigs, postings, by_code, max_df)


# ---------------------------------------------------------------------------------------------
# Matching


class ReasonKind(StrEnum):
    CODE = "code"  # the pasted error code is one of the article's
    PHRASE = "phrase"  # a piece of the paste matches one of the article's signatures
    TITLE = "title"  # ... or its title
    WEAK = "weak"  # nothing conclusive: only a vague similarity


@dataclass(frozen=True)
class Reason:
    """Why an article ranks: a kind and its data; the reader's language words it."""

    kind: ReasonKind
    code: int | None = None
    text: str = ""  # the pasted words that matched (PHRASE / TITLE), shortened


class NoticeKind(StrEnum):
    CUT = "cut"  # the text was cut to MAX_CHARS
    NO_TEXT = "no_text"  # nothing but blanks and punctuation
    CODES_NOT_IN_KB = "codes_not_in_kb"  # the pasted codes no article covers


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    codes: tuple[int, ...] = ()
    limit: int = 0


@dataclass(frozen=True)
class Match:
    article: str  # slug
    title: str  # in the requested language
    score: float  # 0..1
    error_codes: list[int]
    reasons: tuple[Reason, ...]  # error code first, then the matched phrase or title
    highlight: list[str]  # substrings of the ORIGINAL pasted text that matched


@dataclass(frozen=True)
class Result:
    matches: list[Match]  # best first, at most top
    confident: bool  # best score >= THRESHOLD
    codes: list[int]  # error codes found in the text, in order
    uncovered: list[int]  # those of ``codes`` no article covers
    notices: tuple[Notice, ...] = ()


@dataclass
class _Evidence:
    text: float = 0.0
    phrase: tuple[int, int] | None = None  # span in the compact query
    kind: str = "signature"
    codes: list[tuple[int, int, int]] = field(default_factory=list)


# Japanese text is compared character by character, and katakana loanwords shared by unrelated
# messages (リモートコンピューター, ネットワーク) lift the ratio of texts that mean different things:
# "リモート コンピューターが応答していません" and "リモートコンピューターに接続できません" align at
# 74. Similarity only counts for Japanese above this floor (55 for English); at 60 that pair
# scores 0.40, under the threshold, while the seed's paraphrases in Issue #12 stay over it.
_CJK_FLOOR = 60.0


def _enough(compact: str) -> int:
    # Japanese carries about three times the information per character of English.
    head = compact[:60]
    cjk = sum(1 for ch in head if _is_cjk(ch)) > len(head) / 2
    return 18 if cjk else 45


def _text_score(query: str, sig: _Signature) -> tuple[float, tuple[int, int] | None]:
    """How clearly ``sig`` appears in ``query`` (or a long piece of it does), in 0..1.

    partial_ratio aligns the shorter string inside the longer one. That rewards a short query
    for being a piece of a signature, so the score is scaled by how much text matched: a
    fragment must be long enough in absolute terms and cover enough of the signature.
    """
    aligned = _align(sig.compact, query)
    if aligned is None:
        return 0.0, None
    ratio, span = aligned
    window = min(len(query), len(sig.compact))
    # A whole short message ("Policy match error.") is conclusive; a short piece of a long
    # one is not. Never less than 12 letters, so "VPN" alone proves nothing.
    length_factor = min(1.0, window / max(12, min(sig.enough, len(sig.compact))))
    coverage_factor = 0.7 + 0.3 * min(1.0, window / (0.6 * len(sig.compact)))
    floor = _CJK_FLOOR if sig.enough < 45 else 55.0
    quality = max(0.0, (ratio - floor) / (100.0 - floor))
    score = quality**0.8 * length_factor * coverage_factor
    return min(1.0, score), span


def _align(sig: str, query: str) -> tuple[float, tuple[int, int]] | None:
    """rapidfuzz's partial ratio of ``sig`` and ``query``, and the matched span in ``query``.

    For needles up to 64 characters rapidfuzz's partial_ratio is bit-parallel and fast. For
    longer ones it slides a window over every offset (about 0.3 ms for two 400-letter texts,
    too slow for 20 candidates in 10 ms), so there the window is placed where the needle's
    trigrams are densest in the haystack and scored with one ``fuzz.ratio`` call (plus one
    a tenth wider, for pastes with doubled letters or inserted words).
    """
    short, long_, query_is_long = (
        (sig, query, True) if len(sig) <= len(query) else (query, sig, False)
    )
    if len(short) <= 64:
        al = fuzz.partial_ratio_alignment(sig, query, score_cutoff=55)
        if al is None:
            return None
        return al.score, (al.dest_start, al.dest_end)
    start = _densest_window(short, long_)
    size = len(short)
    best = max(
        (fuzz.ratio(short, long_[start : start + width]), width)
        for width in (size, size + size // 10)
    )
    if best[0] < 55:
        return None
    if query_is_long:
        return best[0], (start, min(len(query), start + best[1]))
    return best[0], (0, len(query))


@functools.lru_cache(maxsize=64)
def _gram_positions(text: str) -> dict[str, list[int]]:
    """Where each trigram occurs; cached because one query meets many candidates."""
    positions: dict[str, list[int]] = {}
    for i in range(len(text) - NGRAM + 1):
        positions.setdefault(text[i : i + NGRAM], []).append(i)
    return positions


def _densest_window(short: str, long_: str) -> int:
    """Start of the ``len(short)``-wide window of ``long_`` sharing most trigrams with ``short``."""
    grams = _ngrams(short)
    positions = _gram_positions(long_)
    hits = sorted(i for gram in grams for i in positions.get(gram, ()))
    if not hits:
        return 0
    size = len(short)
    best_count, best_start, lo = 0, hits[0], 0
    for hi, pos in enumerate(hits):
        while pos - hits[lo] > size - NGRAM:
            lo += 1
        if hi - lo + 1 > best_count:
            best_count, best_start = hi - lo + 1, hits[lo]
    return max(0, min(best_start, len(long_) - size))


def _candidates(index: Index, query: str) -> list[int]:
    grams = _ngrams(query)
    counts: Counter[int] = Counter()
    for gram in grams:
        posting = index.postings.get(gram)
        if posting is not None and len(posting) <= index.max_df:
            counts.update(posting)
    if not counts:
        return []
    nq = max(1, len(grams))
    least = 1 if len(query) < 6 else 2
    sigs = index.signatures
    # Containment (shared trigrams over the smaller set) approximates partial_ratio cheaply.
    scored = [
        (count / min(nq, sigs[sid].grams or 1), sid)
        for sid, count in counts.items()
        if count >= least
    ]
    best = heapq.nlargest(CANDIDATES, scored)
    if not best:
        return []
    # Far below the best containment, partial_ratio cannot come close either: skip the work.
    floor = max(0.1, 0.4 * best[0][0])
    return [sid for ratio, sid in best if ratio >= floor]


def _span_text(original: str, spans: Sequence[tuple[int, int]], start: int, end: int) -> str:
    if not spans or start >= end:
        return ""
    return original[spans[start][0] : spans[end - 1][1]]


def _shorten(phrase: str, limit: int = 60) -> str:
    phrase = " ".join(phrase.split())
    if len(phrase) <= limit:
        return phrase
    half = (limit - 5) // 2
    return f"{phrase[:half]} ... {phrase[-half:]}"


def match(index: Index, text: str, *, top: int = 5, lang: str = "ja") -> Result:
    """Rank the index's articles for a pasted ``text``; never raises for any ``str``.

    Returns at most ``top`` matches, best first, with ``confident`` false when the best score
    is under ``THRESHOLD`` (the nearest candidates are still returned). When the paste names
    error codes and no article covers any of them, every score is capped under the threshold.
    """
    notices: list[Notice] = []
    if not isinstance(text, str):
        text = ""
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        notices.append(Notice(NoticeKind.CUT, limit=MAX_CHARS))
    norm, spans = _normalize_mapped(text)
    compact, cspans = _compact_mapped(norm, spans)
    found = _codes_with_spans(norm)
    codes = list(dict.fromkeys(c for c, _, _ in found))
    uncovered = [c for c in codes if c not in index.by_code]
    if not compact and not codes:
        # A greeting alone ("hello") is text, just nothing to match; only say "no text" when
        # there are no letters or digits at all (empty, whitespace, punctuation, emoji).
        if not any(ch.isalnum() for ch in text):
            notices.append(Notice(NoticeKind.NO_TEXT))
        return Result([], False, [], [], tuple(notices))

    evidence: dict[int, _Evidence] = {}
    for code, start, end in found:
        for pos in index.by_code.get(code, []):
            evidence.setdefault(pos, _Evidence()).codes.append((code, start, end))
    if uncovered and not evidence:
        notices.append(Notice(NoticeKind.CODES_NOT_IN_KB, codes=tuple(uncovered)))

    scored = []
    for sid in _candidates(index, compact):
        score, phrase = _text_score(compact, index.signatures[sid])
        if score > 0:
            scored.append((score * index.signatures[sid].weight, sid, phrase))
    for score, sid, phrase in _settle_rivals(index, compact, scored):
        sig = index.signatures[sid]
        ev = evidence.setdefault(sig.article, _Evidence())
        if score > ev.text:
            ev.text, ev.phrase, ev.kind = score, phrase, sig.kind

    cap = UNCOVERED_CAP if uncovered and len(uncovered) == len(codes) else 1.0
    matches = [
        _to_match(index.articles[pos], ev, text, spans, cspans, lang, cap)
        for pos, ev in evidence.items()
        if ev.codes or ev.text > 0.05
    ]
    matches.sort(key=lambda m: (-m.score, m.article))
    matches = matches[: max(0, top)]
    confident = bool(matches) and matches[0].score >= THRESHOLD
    return Result(matches, confident, codes, uncovered, tuple(notices))


def _settle_rivals(
    index: Index, query: str, scored: list[tuple[float, int, tuple[int, int] | None]]
) -> list[tuple[float, int, tuple[int, int] | None]]:
    """Let the words that tell near-identical signatures apart decide between them.

    809's and 811's messages share their first sentence; a paste of either scores high on
    both. For each pair of close candidates from different articles for which the paste's
    evidence is mostly the same words, each keeps ``RIVAL_FLOOR`` of its score plus the rest
    in proportion to how many of its own trigrams (those the rival lacks) the paste contains.
    A paste of only the shared words tells neither apart, so neither is confident; when one
    message is contained in the other, the paste's having or lacking the longer one's extra
    words decides.
    """
    strong = sorted((s for s in scored if s[0] >= 0.3), reverse=True)[:8]
    if len(strong) < 2:
        return scored
    sigs = index.signatures
    grams = {sid: _ngrams(sigs[sid].compact) for _, sid, _ in strong}
    qgrams = _ngrams(query)
    factor: dict[int, float] = {}
    for i, (_, a, _) in enumerate(strong):
        for _, b, _ in strong[i + 1 :]:
            if sigs[a].article == sigs[b].article:
                continue
            # Rivals: most of what the paste shares with either is shared by both.
            shared = len(grams[a] & grams[b] & qgrams)
            if shared < RIVAL_CONTAINMENT * min(len(grams[a] & qgrams), len(grams[b] & qgrams)):
                continue
            present = {}
            for own, other in ((a, b), (b, a)):
                distinct = grams[own] - grams[other]
                present[own] = len(distinct & qgrams) / len(distinct) if distinct else None
            for own, other in ((a, b), (b, a)):
                # A message contained in the other (732 inside 720) has no words of its own:
                # it wins exactly when the paste lacks the longer one's extra words.
                mine = present[own] if present[own] is not None else 1.0 - (present[other] or 0.0)
                f = RIVAL_FLOOR + (1.0 - RIVAL_FLOOR) * mine
                factor[own] = min(factor.get(own, 1.0), f)
    if not factor:
        return scored
    return [(score * factor.get(sid, 1.0), sid, phrase) for score, sid, phrase in scored]


def _to_match(
    art: _Article,
    ev: _Evidence,
    original: str,
    spans: Sequence[tuple[int, int]],
    cspans: Sequence[tuple[int, int]],
    lang: str,
    cap: float = 1.0,
) -> Match:
    # A pasted code sets a floor that text raises; text alone tops out above that floor.
    score = CODE_BASE + (1.0 - CODE_BASE) * ev.text if ev.codes else TEXT_ONLY_MAX * ev.text
    reasons: list[Reason] = []
    highlight: list[str] = []
    for code in dict.fromkeys(c for c, _, _ in ev.codes):
        reasons.append(Reason(ReasonKind.CODE, code=code))
    for _, start, end in ev.codes:
        piece = _span_text(original, spans, start, end)
        if piece and not any(piece in h for h in highlight):
            highlight.append(piece)
    if ev.phrase is not None and ev.text >= 0.3:
        piece = _span_text(original, cspans, *ev.phrase)
        if piece:
            kind = ReasonKind.TITLE if ev.kind == "title" else ReasonKind.PHRASE
            reasons.append(Reason(kind, text=_shorten(piece)))
            if piece not in highlight:
                highlight.append(piece)
    if not reasons:
        reasons.append(Reason(ReasonKind.WEAK))
    title = art.titles.get(lang) or art.titles.get("en") or art.titles.get("ja") or art.slug
    return Match(
        article=art.slug,
        title=str(title),
        score=round(min(cap, 1.0, max(0.0, score)), 4),
        error_codes=list(art.codes),
        reasons=tuple(reasons),
        highlight=highlight,
    )
