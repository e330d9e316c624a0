"""The matcher's structured reasons and notices, worded in the active language.

``matching`` stays pure (codes and parameters only); this module, the templates and the
``kb_match`` command put them into Japanese or English through Django's i18n.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from diagnostics import error_codes
from diagnostics.matching import Match, Notice, NoticeKind, Reason, ReasonKind, Result


def reason_text(reason: Reason) -> str:
    if reason.kind == ReasonKind.CODE:
        return _("error code %(code)s") % {"code": reason.code}
    if reason.kind == ReasonKind.PHRASE:
        return _("phrase: '%(text)s'") % {"text": reason.text}
    if reason.kind == ReasonKind.TITLE:
        return _("title: '%(text)s'") % {"text": reason.text}
    return _("weak text similarity")


def why(match: Match) -> str:
    """One line: "error code 789 + phrase: '...'"."""
    return " + ".join(reason_text(r) for r in match.reasons)


def notice_text(notice: Notice) -> str:
    if notice.kind == NoticeKind.CUT:
        return _("The text was cut to the first %(limit)s characters.") % {
            "limit": f"{notice.limit:,}"
        }
    if notice.kind == NoticeKind.NO_TEXT:
        return _("There is no text to match.")
    listed = ", ".join(str(c) for c in notice.codes)
    return ngettext(
        "Error code %(codes)s is not in our knowledge base yet.",
        "Error codes %(codes)s are not in our knowledge base yet.",
        len(notice.codes),
    ) % {"codes": listed}


def code_rows(result: Result, lang: str) -> list[dict]:
    """Each pasted code with Windows' meaning (``lang``, else English) and whether the KB has it."""
    rows = []
    uncovered = set(result.uncovered)
    for code in result.codes:
        found = error_codes.meaning(code, lang)
        rows.append(
            {
                "code": code,
                "meaning": found.text if found else "",
                "meaning_lang": found.lang if found else "",
                "in_kb": code not in uncovered,
                "known": found is not None,
            }
        )
    return rows
