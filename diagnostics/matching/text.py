"""Normalisation: the form pasted texts and signatures are compared in, and a map back."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

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
