"""The article's own form, and the whole article checked as kb_import would read it."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from diagnostics import catalog, kb
from diagnostics.admin.fields import CodesField
from diagnostics.models import Article

# --- the article form -----------------------------------------------------------------------


class ArticleForm(forms.ModelForm):
    """The article's own fields; its error codes as ``809, 789``, not a JSON list."""

    error_codes = CodesField(label=_("error codes"))

    class Meta:
        model = Article
        fields = [
            "slug",
            "status",
            "error_codes",
            "title_ja",
            "title_en",
            *(
                f"{part}_{lang}"
                for part in ("summary", "causes", "steps", "notes")
                for lang in ("ja", "en")
            ),
            "inferred",
            "manual_steps",
            "sources",
        ]


# --- the whole article, as kb_import would read it --------------------------------------------
# The inline formsets are validated in order (signatures, fixes, checks) against one unsaved
# article instance; each leaves its rows there and the last one asks ``kb.validate`` about
# the whole article, so the admin saves nothing that kb_import would refuse.
ON_FIELDS = re.compile(r"^(checks\[\d+\]\.(kind|args|expect)|fixes\[\d+\]\.steps)")


def _pair(source: Any, field: str) -> dict[str, str]:
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    return {"ja": get(f"{field}_ja") or "", "en": get(f"{field}_en") or ""}


def _kept(formset: forms.BaseInlineFormSet) -> list[dict[str, Any]] | None:
    """The cleaned rows the save would keep, or None when a row has its own errors."""
    if any(form.errors for form in formset.forms):
        return None
    return [
        form.cleaned_data
        for form in formset.forms
        if form.cleaned_data and not form.cleaned_data.get("DELETE")
    ]


def _parts(article: Article) -> dict[str, Any]:
    return article.__dict__.setdefault("_editor_rows", {})


def article_file(article: Article, rows: dict[str, Any]) -> dict[str, Any]:
    """The article as ``kbstore.article_data`` writes it, from the forms about to be saved."""
    data: dict[str, Any] = {
        "slug": article.slug,
        "status": article.status,
        "error_codes": list(article.error_codes or []),
        "title": _pair(article, "title"),
        "summary": _pair(article, "summary"),
        "signatures": [
            {"lang": s["lang"], "text": s["text"], "source": s["source"], "verified": s["verified"]}
            for s in rows["signatures"]
        ],
        "causes": _pair(article, "causes"),
        "steps": _pair(article, "steps"),
        "checks": [
            {
                "key": c["key"],
                "title": _pair(c, "title"),
                "kind": c["kind"],
                "args": c["args"],
                **(
                    {"role": c["role"]} if c["role"] != catalog.role_of({"kind": c["kind"]}) else {}
                ),
                **{f: c[f] for f in ("codes", "when", "expect") if c.get(f)},
                "explanation": _pair(c, "explanation"),
                **({"fix": c["fix"].key} if c.get("fix") else {}),
            }
            for c in rows["checks"]
        ],
        "fixes": [
            {
                "key": f["key"],
                "title": _pair(f, "title"),
                "steps": f["steps"],
                "restart_required": f["restart_required"],
                "needs_approval": f["needs_approval"],
            }
            for f in rows["fixes"]
        ],
        "manual_steps": article.manual_steps or [],
        "sources": article.sources or [],
    }
    if article.notes_ja or article.notes_en:
        data["notes"] = _pair(article, "notes")
    if article.inferred:
        data["inferred"] = article.inferred
    return data


class SignatureFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        _parts(self.instance)["signatures"] = _kept(self)


class CheckFormSet(forms.BaseInlineFormSet):
    """The last rows validated: ask the one KB validator about the whole article."""

    def clean(self) -> None:
        super().clean()
        rows = {**_parts(self.instance), "checks": _kept(self)}
        if any(rows.get(part) is None for part in ("signatures", "fixes", "checks")):
            return  # a row's own errors come first
        problems = [
            p for p in kb.validate(article_file(self.instance, rows)) if not ON_FIELDS.match(p)
        ]
        if problems:
            raise forms.ValidationError([_("kb_import would refuse this article:"), *problems])


class FixFormSet(forms.BaseInlineFormSet):
    """A published article cannot carry fix steps that only their author has approved."""

    def clean(self) -> None:
        super().clean()
        _parts(self.instance)["fixes"] = _kept(self)
        if self.instance.status != self.instance.Status.PUBLISHED:
            return
        waiting = [
            form.cleaned_data.get("key")
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and (form.resets_review() or form.instance.awaits_second_admin)
        ]
        if waiting:
            raise forms.ValidationError(
                _(
                    "Publishing needs a second KB admin: the steps of %(fixes)s are new or "
                    "changed and no other KB admin has approved them. Save the article as a "
                    "draft; another KB admin approves the steps on this page, then publishes."
                )
                % {"fixes": ", ".join(waiting)}
            )
