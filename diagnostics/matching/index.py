"""The signature index: every article's signatures and titles, trigram postings, codes."""

from __future__ import annotations

from dataclasses import dataclass

from diagnostics.matching.text import _compact, _is_cjk

TITLE_WEIGHT = 0.9  # a title is our wording, not Windows': a little less evidence
NGRAM = 3


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


def _enough(compact: str) -> int:
    # Japanese carries about three times the information per character of English.
    head = compact[:60]
    cjk = sum(1 for ch in head if _is_cjk(ch)) > len(head) / 2
    return 18 if cjk else 45
