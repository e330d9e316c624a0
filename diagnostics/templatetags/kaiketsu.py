"""Template helpers: safe Markdown, bilingual fields, highlighting matched phrases."""

import json
import re

import markdown as md
import nh3
from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

from diagnostics import capabilities, match_words

register = template.Library()

_ALLOWED_TAGS = {
    "p",
    "ul",
    "ol",
    "li",
    "strong",
    "em",
    "code",
    "pre",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
    "br",
    "blockquote",
    "h3",
    "h4",
}


@register.filter
def markdown(text: str) -> str:
    """Render KB Markdown; the sanitiser drops any raw HTML an editor may have typed."""
    html = md.markdown(text or "", extensions=["tables", "sane_lists"])
    return mark_safe(nh3.clean(html, tags=_ALLOWED_TAGS, link_rel="noopener noreferrer"))  # noqa: S308


@register.filter
def tr(obj, field: str) -> str:
    """``{{ article|tr:"title" }}``: the field in the active language (falls back to the other)."""
    return obj.tr(field)


@register.filter
def highlight(text: str, phrases) -> str:
    """Escape ``text`` and wrap each matched phrase in <mark>."""
    escaped = escape(text or "")
    for phrase in sorted({p for p in phrases or [] if p and p.strip()}, key=len, reverse=True):
        escaped = re.sub(re.escape(escape(phrase)), lambda m: f"<mark>{m.group(0)}</mark>", escaped)
    return mark_safe(escaped)  # noqa: S308 - built from escaped text only


@register.filter
def why(match) -> str:
    """``{{ m|why }}``: the matcher's reasons for a match, in the active language."""
    return match_words.why(match)


@register.filter
def notice_text(notice) -> str:
    """``{{ n|notice_text }}``: one of the matcher's notices, in the active language."""
    return match_words.notice_text(notice)


@register.filter
def cannot_text(result) -> str:
    """``{{ step_result|cannot_text }}``: "could not check: …" in the active language."""
    return capabilities.cannot_text(getattr(result, "cannot", None))


@register.filter
def preflight_rows(preflight) -> list:
    """A machine's stored preflight as rows with the missing right and its grant command."""
    return capabilities.preflight_rows(preflight)


@register.filter
def missing_rights(preflight) -> list:
    """The kinds a machine's preflight found the portal's account cannot run."""
    return capabilities.missing_rights(preflight)


def _flat(value, prefix: str = "") -> dict[str, object]:
    """Nested facts as dotted keys, so the helpdesk reads one value per row."""
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _json(value) -> str:
    # JSON as the runner sent it (true, null, "…"), never Python's repr (True, None, '…' '…').
    return json.dumps(value, ensure_ascii=False)


@register.filter
def fact_rows(facts) -> list[tuple[str, str]]:
    """``{{ facts|fact_rows }}``: (dotted key, JSON value) rows of a step's facts."""
    if facts in (None, {}):
        return []
    return [(key, _json(value)) for key, value in _flat(facts).items()]


@register.filter
def change_rows(result) -> list[tuple[str, str, str]]:
    """``{{ step_result|change_rows }}``: (key, before, after) rows of a fix step, as JSON."""
    before, after = _flat(result.before), _flat(result.after)
    keys = list(dict.fromkeys([*before, *after]))
    return [(key, _json(before.get(key)), _json(after.get(key))) for key in keys]


@register.filter
def error_parts(error: str) -> tuple[str, str]:
    """``{{ job.error|error_parts }}``: the sentence for the employee (written in their language
    where the error was made) and the technical rest (often Windows' or WinRM's English), which
    the page folds into the helpdesk's details."""
    headline, _sep, detail = (error or "").strip().partition("\n")
    return headline, detail.strip()
