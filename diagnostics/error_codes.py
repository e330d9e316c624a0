"""Windows' own meaning of every RAS/VPN error code, from ``diagnostics/data/ras_codes.json``.

The table is data, not articles: English is the text Windows shows (its message tables, see
the file's ``sources``), Japanese only where a Japanese Windows text could be sourced. Pure: no
ORM, no Django; the caller picks the language and words the fallback note.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "ras_codes.json"


@dataclass(frozen=True)
class CodeMeaning:
    code: int
    text: str  # in ``lang``
    lang: str  # "ja" or "en": English when no Japanese text was sourced
    source: str  # the citation of the row's text


@functools.cache
def _table() -> tuple[dict[int, dict], dict[str, str]]:
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    return {int(row["code"]): row for row in data["codes"]}, dict(data["sources"])


def codes() -> list[int]:
    """Every code the table defines, ascending."""
    return sorted(_table()[0])


def source_of(code: int) -> str | None:
    rows, sources = _table()
    row = rows.get(code)
    return None if row is None else sources.get(row["source"], row["source"])


def meaning(code: int, lang: str = "en") -> CodeMeaning | None:
    """Windows' message for ``code`` in ``lang`` (English if no Japanese text), or None."""
    rows, sources = _table()
    row = rows.get(code)
    if row is None:
        return None
    if lang == "ja" and row.get("ja"):
        return CodeMeaning(code, row["ja"], "ja", row.get("ja_source") or "")
    return CodeMeaning(code, row["en"], "en", sources.get(row["source"], row["source"]))
