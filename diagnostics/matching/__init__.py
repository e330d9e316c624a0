"""Pasted error text -> ranked knowledge-base articles (pure functions, no ORM, no network).

A package: ``text`` (normalisation), ``codes`` (error codes), ``index`` (the signature index)
and ``ranking`` (scores, rivals, results); this module is its public face.

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
   are both close to the paste, the words only one of them has decide (``ranking._settle_rivals``).

The result carries structured reasons and notices (``Reason``, ``Notice``), never sentences:
the view, the template and ``kb_match`` word them in the reader's language.
"""

from __future__ import annotations

from diagnostics.matching.codes import MAX_CHARS, extract_codes
from diagnostics.matching.index import Index, build_index
from diagnostics.matching.ranking import (
    THRESHOLD,
    Match,
    Notice,
    NoticeKind,
    Reason,
    ReasonKind,
    Result,
    match,
)
from diagnostics.matching.text import normalize

__all__ = [
    "MAX_CHARS",
    "THRESHOLD",
    "Index",
    "Match",
    "Notice",
    "NoticeKind",
    "Reason",
    "ReasonKind",
    "Result",
    "build_index",
    "extract_codes",
    "match",
    "normalize",
]
