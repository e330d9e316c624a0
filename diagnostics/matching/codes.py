"""Error codes in a paste: keyword forms, HRESULTs, and plausible bare numbers."""

from __future__ import annotations

import re

from diagnostics.matching.text import normalize

MAX_CHARS = 10_000  # a longer paste is cut to this many characters

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
