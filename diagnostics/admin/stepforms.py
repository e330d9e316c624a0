"""Typed admin forms for checks and fixes, generated from the step catalog: no JSON by hand.

A KB admin picks a step's kind and gets that kind's own fields (``catalog.KINDS[kind].args``)
with help text; a check's expectation is rows of fact (the facts the kind really reports),
operator and a typed value. On save the forms ask the one KB validator that ``kb_import``
asks (``catalog.check_problems``, ``catalog.fix_steps_problems``) and put each problem beside
the field it names. Only the chosen kind's fields are rendered and read; the editor's script
(``static/diagnostics/kb-editor.js``) brings another kind's from the inline's empty form.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from diagnostics import catalog
from diagnostics.admin.fields import (
    CodesField,
    ConditionsField,
    arg_fields,
    args_from,
    chosen_kind,
    disable_other_kinds,
    field_of_problem,
    kind_choices,
    kind_fieldsets,
    set_initial_args,
)
from diagnostics.models import Check, Fix

FIX_STEP_SLOTS = 2  # every shipped fix has one step; one more slot lets an admin add a second

# --- the check form -------------------------------------------------------------------------


# A check's stored fields, in the form's order; the typed form writes ``args`` through the
# kind's own fields instead.
CHECK_FIELDS = [
    "key", "position", "title_ja", "title_en", "kind", "args", "role", "codes", "when", "expect",
    "explanation_ja", "explanation_en", "fix",
]  # fmt: skip


class BaseCheckForm(forms.ModelForm):
    """A check: its kind's typed arguments, expectation rows and conditions; no JSON."""

    kind = forms.ChoiceField(
        label=_("kind"),
        choices=kind_choices(catalog.CHECK_KINDS, blank=False),
        widget=forms.Select(attrs={"data-step-slot": "c"}),
    )
    codes = CodesField(label=_("codes"))
    expect = ConditionsField(
        label=_("expectation"),
        facts_from_kind=True,
        help_text=_("Every row must hold for the check to pass. A list for in / not in."),
    )
    when = ConditionsField(
        label=_("applies when"),
        facts_from_kind=False,
        help_text=_("evidence.code or <check key>.<fact>; leave empty for always."),
    )

    class Meta:
        model = Check
        fields = [f for f in CHECK_FIELDS if f != "args"]  # args: one field per argument
        widgets = {"position": forms.HiddenInput(attrs={"class": "position"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            set_initial_args(self, "", self.instance.kind, self.instance.args or {})
        stored = self.instance.kind or catalog.CHECK_KINDS[0]
        kind = chosen_kind(self, "kind", stored)
        disable_other_kinds(self, "", catalog.CHECK_KINDS, kind)
        self.chosen_kinds = {"c": kind}  # which argument fieldset to render (kbeditor tags)
        self.fields["expect"].widget.kind = kind

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("kind")
        if not kind or any(f in self.errors for f in ("kind", "expect", "when")):
            return data
        data["args"] = args_from(self, "", kind)
        # The validator of KB files, so the admin refuses what kb_import refuses, in its words.
        check = {
            "kind": kind,
            "args": data["args"],
            "expect": data["expect"],
            "role": data.get("role"),
        }
        for problem in catalog.check_problems("", check):
            field = (
                field_of_problem(self, "", kind, problem) if problem.startswith("args") else None
            )
            self.add_error(field or ("expect" if problem.startswith("expect") else "kind"), problem)
        for i, cond in enumerate(data.get("when") or []):
            fact = cond.get("fact", "")
            rest = fact.split(".", 1)[1] if "." in fact else fact
            for problem in catalog.expect_problems(f"when[{i}]", None, [{**cond, "fact": rest}]):
                self.add_error("when", problem)
        return data

    def save(self, commit: bool = True) -> Check:
        self.instance.args = self.cleaned_data["args"]
        return super().save(commit)


CheckForm = type(
    "CheckForm", (BaseCheckForm,), {**arg_fields("", catalog.CHECK_KINDS), "__module__": __name__}
)

CHECK_FIELDSETS = [
    (None, {"fields": ["key", "title_ja", "title_en", "kind", "position"]}),
    *kind_fieldsets("", catalog.CHECK_KINDS, "c"),
    (
        _("Judgement"),
        {"fields": ["expect", "role", "codes", "when", "fix"], "classes": ["judgement"]},
    ),
    (_("Explanation"), {"fields": ["explanation_ja", "explanation_en"]}),
]


# --- the fix form ---------------------------------------------------------------------------


class ReviewedFix:
    """Mixin for the fix forms: does this save change what the second KB admin approved?"""

    def remember_reviewed(self) -> None:
        self.reviewed = (self.instance.steps, self.instance.needs_approval)

    def resets_review(self) -> bool:
        """New steps, changed steps, or approval turned off: a second KB admin must look."""
        steps, needs_approval = self.reviewed
        if not self.instance.pk:
            return True
        turned_off = needs_approval and not self.cleaned_data.get("needs_approval")
        return self.cleaned_data.get("steps") != steps or turned_off


def _slot(i: int) -> str:
    return f"s{i}_"


class BaseFixForm(ReviewedFix, forms.ModelForm):
    """A fix: up to FIX_STEP_SLOTS typed steps, each a fix kind with its own arguments."""

    class Meta:
        model = Fix
        fields = ["key", "position", "title_ja", "title_en", "restart_required", "needs_approval"]
        widgets = {"position": forms.HiddenInput(attrs={"class": "position"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remember_reviewed()
        steps = self.instance.steps if self.instance.pk else []
        for i, step in enumerate(steps[:FIX_STEP_SLOTS] if isinstance(steps, list) else []):
            self.initial[f"{_slot(i)}kind"] = step.get("kind", "")
            set_initial_args(self, _slot(i), step.get("kind", ""), step.get("args") or {})
        self.chosen_kinds = {}  # which argument fieldsets to render (kbeditor tags)
        for i in range(FIX_STEP_SLOTS):
            stored = self.initial.get(f"{_slot(i)}kind", "")
            chosen = chosen_kind(self, f"{_slot(i)}kind", stored)
            disable_other_kinds(self, _slot(i), catalog.FIX_KINDS, chosen)
            self.chosen_kinds[str(i)] = chosen

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        steps, slots = [], []
        for i in range(FIX_STEP_SLOTS):
            kind = data.get(f"{_slot(i)}kind")
            if kind:
                steps.append({"kind": kind, "args": args_from(self, _slot(i), kind)})
                slots.append(i)
        data["steps"] = steps
        for problem in catalog.fix_steps_problems("steps", steps):  # as kb_import says it
            self._place_step_problem(problem, steps, slots)
        return data

    def _place_step_problem(self, problem: str, steps: list, slots: list[int]) -> None:
        match = re.match(r"steps\[(\d+)\]", problem)
        if not match:
            self.add_error(f"{_slot(0)}kind", problem)
            return
        slot = _slot(slots[int(match.group(1))])
        kind = steps[int(match.group(1))]["kind"]
        field = field_of_problem(self, slot, kind, problem) if ".args" in problem else None
        self.add_error(field or f"{slot}kind", problem)

    def save(self, commit: bool = True) -> Fix:
        self.instance.steps = self.cleaned_data["steps"]
        return super().save(commit)


def _fix_form_fields() -> dict[str, forms.Field]:
    fields: dict[str, forms.Field] = {}
    for i in range(FIX_STEP_SLOTS):
        fields[f"{_slot(i)}kind"] = forms.ChoiceField(
            label=_("kind"),
            required=False,
            choices=kind_choices(catalog.FIX_KINDS, blank=True),
            widget=forms.Select(attrs={"data-step-slot": str(i)}),
        )
        fields.update(arg_fields(_slot(i), catalog.FIX_KINDS))
    return fields


FixForm = type("FixForm", (BaseFixForm,), {**_fix_form_fields(), "__module__": __name__})

FIX_FIELDSETS = [
    (
        None,
        {
            "fields": [
                "key",
                "title_ja",
                "title_en",
                "restart_required",
                "needs_approval",
                "position",
            ]
        },
    ),
    *(
        fieldset
        for i in range(FIX_STEP_SLOTS)
        for fieldset in (
            (_("Step %(n)s") % {"n": i + 1}, {"fields": [f"{_slot(i)}kind"], "classes": ["step"]}),
            *kind_fieldsets(_slot(i), catalog.FIX_KINDS, str(i)),
        )
    ),
]


# --- the raw JSON forms, for superusers ------------------------------------------------------


class RawCheckForm(forms.ModelForm):
    """The stored JSON as it is (superusers only), still refused by the one validator."""

    kind = forms.ChoiceField(choices=[(k, k) for k in catalog.CHECK_KINDS])

    class Meta:
        model = Check
        fields = CHECK_FIELDS

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        typed = ("kind", "args", "expect")
        if any(name in self.errors for name in typed):
            return data  # e.g. args that are not JSON: that error says it all
        check = {name: data.get(name) for name in (*typed, "role")}
        for problem in catalog.check_problems("", check):
            field = next((n for n in typed if problem.startswith(n)), None)
            self.add_error(field, problem)
        return data


class RawFixForm(ReviewedFix, forms.ModelForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remember_reviewed()

    class Meta:
        model = Fix
        fields = [
            "key",
            "position",
            "title_ja",
            "title_en",
            "steps",
            "restart_required",
            "needs_approval",
        ]

    def clean_steps(self) -> list:
        steps = self.cleaned_data["steps"]
        problems = catalog.fix_steps_problems("steps", steps)  # as kb_import says it
        if problems:
            raise forms.ValidationError(problems)
        return steps
