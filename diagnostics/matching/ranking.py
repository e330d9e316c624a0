"""Scores, rivals and the result: what ``match`` returns for a paste."""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from rapidfuzz import fuzz

from diagnostics.matching.codes import MAX_CHARS, _codes_with_spans
from diagnostics.matching.index import NGRAM, Index, _Article, _ngrams, _Signature
from diagnostics.matching.text import _compact_mapped, _normalize_mapped

THRESHOLD: float = 0.45  # dev set: negatives top out at 0.19, clear pastes start at 0.51
CODE_BASE = 0.72  # a pasted code alone: confident, but beatable by a clear text match
TEXT_ONLY_MAX = 0.95
CANDIDATES = 24  # signatures scored with rapidfuzz after the trigram prefilter
# A paste naming only codes no article covers: every article stays under the threshold.
UNCOVERED_CAP = THRESHOLD - 0.05
# Two close signatures of different articles are rivals when this share of what the paste has
# in common with either is common to both (a paste of 809's or 811's shared first sentence).
RIVAL_CONTAINMENT = 0.6
# A rival none of whose own words the paste has keeps this share of its score: the paste does
# not tell it from the other, so neither should reach the threshold on those words alone.
RIVAL_FLOOR = 0.5


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
