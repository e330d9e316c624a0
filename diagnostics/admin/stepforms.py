"""Typed admin forms for checks and fixes, generated from the step catalog: no JSON by hand.

A KB admin picks a step's kind and gets that kind's own fields (``catalog.KINDS[kind].args``)
with help text; a check's expectation is rows of fact (the facts the kind really reports),
operator and a typed value. On save the forms ask the one KB validator that ``kb_import``
asks (``catalog.check_problems``, ``catalog.fix_steps_problems``) and put each problem beside
the field it names. Every kind's fields are on the form; ``static/diagnostics/kb-editor.js``
shows only those of the kind chosen, and only those are read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.db import models
from django.forms.renderers import TemplatesSetting
from django.utils.translation import gettext_lazy as _

from diagnostics import catalog, kb
from diagnostics.models import Article, Check, Fix

FIX_STEP_SLOTS = 2  # every shipped fix has one step; one more slot lets an admin add a second
EXPECT_ROWS_SPARE = 2  # blank expectation rows below the written ones

# Words for arguments whose catalog name alone says too little to a helpdesk lead.
ARG_LABELS = {
    ("registry_value", "name"): _("value name"),
    ("set_registry_value", "name"): _("value name"),
    ("service", "name"): _("service name"),
    ("set_service", "name"): _("service name"),
    ("set_registry_value", "value"): _("new value"),
    ("set_registry_value", "absent"): _("remove the value"),
    ("set_vpn_psk", "psk"): _("pre-shared key (secret name)"),
}
PATTERN_HELP = {
    catalog.SERVICE_NAME: _("The service's short name, e.g. PolicyAgent."),
    catalog.REGISTRY_PATH: _("A key under HKLM:\\ or HKCU:\\, e.g. HKLM:\\SYSTEM\\…"),
    catalog.HOST_NAME: _("A host name or IP address."),
}
# A dotted fact reads inside a structured fact; these are the ones a kind's facts carry.
SUB_FACTS = {
    "vpn_connection": tuple(f"ipsec_custom_policy.{k}" for k in catalog.IPSEC_VALUES),
}
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[^,]+)\s*(?:,|$)')
_INT = re.compile(r"^-?\d+$")


# --- typed values: what a person types <-> the JSON the KB stores ----------------------------


def parse_scalar(text: str) -> Any:
    """``2`` -> 2, ``true`` -> True, ``null`` -> None, ``"2"`` -> "2", ``Running`` -> "Running"."""
    text = text.strip()
    if text in ("null", "true", "false") or _INT.match(text) or text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def show_scalar(value: Any) -> str:
    """The inverse of ``parse_scalar``: text that parses back to exactly ``value``."""
    if isinstance(value, str):
        plain = parse_scalar(value) == value and "," not in value and value.strip() == value
        return value if plain and value else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def parse_list(text: str) -> list[Any]:
    """``null, AES128, "a,b"`` -> [None, "AES128", "a,b"]."""
    return [parse_scalar(m.group(1)) for m in _TOKEN.finditer(text) if m.group(1).strip()]


def show_list(values: list[Any]) -> str:
    return ", ".join(show_scalar(v) for v in values)


def parse_value(text: str, op: str) -> Any:
    """A typed expectation value: a list for ``in``/``not_in``, else one scalar."""
    operator = catalog.OPERATORS.get(op)
    return parse_list(text) if operator and operator.value == "list" else parse_scalar(text)


def show_value(value: Any) -> str:
    return show_list(value) if isinstance(value, list) else show_scalar(value)


class KBTextField(forms.CharField):
    """A KB text as written: a browser's CRLF made LF, a final newline kept, so an unchanged
    article saves byte-identical (``kb_export``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["strip"] = False
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return super().to_python(value).replace("\r\n", "\n").replace("\r", "\n")


def text_overrides(rows: int) -> dict:
    """``formfield_overrides`` for the text fields of an article and its inlines."""
    return {
        models.TextField: {
            "form_class": KBTextField,
            "widget": forms.Textarea(attrs={"rows": rows}),
        }
    }


# --- expectation rows (fact, operator, value) -------------------------------------------------


def facts_of(kind: str) -> list[str]:
    """The facts a check kind really reports, dotted ones included."""
    spec = catalog.KINDS.get(kind)
    return [*spec.facts, *SUB_FACTS.get(kind, ())] if spec else []


def facts_by_kind() -> str:
    """Every check kind's facts as JSON, once per page: the editor's script offers a row
    the facts of the kind chosen."""
    return json.dumps({kind: facts_of(kind) for kind in catalog.CHECK_KINDS})


class Rows(list):
    """Rows as posted (text), told apart from a stored list of conditions."""


class ConditionsWidget(forms.Widget):
    """Rows of fact / operator / value, as many as written plus a few blank ones."""

    template_name = "admin/diagnostics/widgets/conditions.html"

    def __init__(self, facts_from_kind: bool, attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.facts_from_kind = facts_from_kind  # expect: a kind's facts; when: free text
        self.kind = ""  # the check's kind, set by its form

    def _render(self, template_name: str, context: dict, renderer: Any = None) -> str:
        # The project's templates, which the default form renderer does not search.
        return super()._render(template_name, context, TemplatesSetting())

    def format_value(self, value: Any) -> list[dict[str, str]]:
        if isinstance(value, Rows):  # a refused post shows back exactly what was typed
            return list(value)
        items = value if isinstance(value, list) else []
        rows = [
            {
                "fact": str(item.get("fact", "")),
                "op": str(item.get("op", "")),
                "value": show_value(item["value"]) if "value" in item else "",
            }
            for item in items
            if isinstance(item, dict)
        ]
        return rows + [{"fact": "", "op": "", "value": ""}] * EXPECT_ROWS_SPARE

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        rows = context["widget"]["value"]
        known = facts_of(self.kind)
        context["widget"].update(
            rows=rows,
            operators=list(catalog.OPERATORS),
            facts=known if self.facts_from_kind else None,
            # A fact written in a file but unknown here stays selectable: nothing is lost.
            unknown_facts=sorted({r["fact"] for r in rows if r["fact"] and r["fact"] not in known}),
        )
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Rows:
        rows, i = Rows(), 0
        while f"{name}_{i}_op" in data:
            rows.append({k: data.get(f"{name}_{i}_{k}", "") for k in ("fact", "op", "value")})
            i += 1
        return rows

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return f"{name}_0_op" not in data


class ConditionsField(forms.Field):
    """A list of ``{fact, op[, value]}`` from rows; a row without a fact is ignored."""

    def __init__(self, *, facts_from_kind: bool, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(widget=ConditionsWidget(facts_from_kind), **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and value else value

    def to_python(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, Rows):
            return value or []  # already the stored form (initial data)
        items = []
        for row in value:
            if not row["fact"].strip():
                continue
            item: dict[str, Any] = {"fact": row["fact"].strip(), "op": row["op"]}
            operator = catalog.OPERATORS.get(row["op"])
            if operator is None or operator.value or row["value"].strip():
                item["value"] = parse_value(row["value"], row["op"])
            items.append(item)
        return items

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(self.prepare_value(initial)) != self.to_python(data)


class CodesField(forms.CharField):
    """RAS error codes as ``809, 789``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", _("RAS error codes, separated by commas, e.g. 809, 789."))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(str(v) for v in value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[int]:
        text = super().to_python(value)
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if any(not _INT.match(p) for p in parts):
            raise forms.ValidationError(_("Write whole numbers separated by commas."))
        return [int(p) for p in parts]

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return list(initial or []) != self.to_python(data)
        except forms.ValidationError:
            return True


# --- one field per argument of every kind ------------------------------------------------------


def _help(arg: catalog.Arg) -> str:
    bits = []
    if arg.required:
        bits.append(str(_("Required.")))
    if arg.pattern in PATTERN_HELP:
        bits.append(str(PATTERN_HELP[arg.pattern]))
    if arg.type == "list[int]":
        bits.append(str(_("Numbers separated by commas, e.g. 500, 4500.")))
    if arg.min is not None and arg.max is not None:
        bits.append(str(_("From %(min)s to %(max)s.") % {"min": arg.min, "max": arg.max}))
    if arg.type == "any":
        bits.append(
            str(_('A number, true/false, or text (quote text that looks like a number: "2").'))
        )
    if arg.secret:
        bits.append(str(_("The name of a secret in the portal's secret store, never the value.")))
    return " ".join(bits)


def arg_field(kind: str, arg: catalog.Arg) -> forms.Field:
    """The form field for one argument: a choice, a number, a list, a yes/no or a text."""
    label = ARG_LABELS.get((kind, arg.name), arg.name.replace("_", " "))
    common = {"label": label, "required": False, "help_text": _help(arg)}
    if arg.type == "list[str]" and arg.choices:
        return forms.MultipleChoiceField(
            choices=[(c, c) for c in arg.choices], widget=forms.CheckboxSelectMultiple, **common
        )
    if arg.choices:
        return forms.ChoiceField(choices=[("", "—"), *((c, c) for c in arg.choices)], **common)
    if arg.type == "bool":
        return forms.TypedChoiceField(
            choices=[("", "—"), ("true", _("yes")), ("false", _("no"))],
            coerce=lambda v: v == "true",
            empty_value=None,
            **common,
        )
    if arg.type == "int":
        return forms.IntegerField(**common)
    return forms.CharField(max_length=arg.max_len if arg.type == "str" else None, **common)


def initial_arg(arg: catalog.Arg, value: Any) -> Any:
    """A stored argument as its field shows it."""
    if value is None:
        return None
    if arg.secret and isinstance(value, dict):
        return value.get("secret", "")
    if arg.type == "bool":
        return "true" if value else "false"
    if arg.type == "list[int]":
        return ", ".join(str(v) for v in value) if isinstance(value, list) else value
    if arg.type == "any":
        return show_scalar(value)
    return value


def cleaned_arg(arg: catalog.Arg, value: Any) -> Any:
    """A field's cleaned value as the KB stores it; None when left empty."""
    if value in (None, "", []):
        return None
    if arg.secret:
        return {"secret": value.strip()}
    if arg.type == "list[int]":
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return [int(p) if _INT.match(p) else p for p in parts]  # the validator names a non-number
    if arg.type == "list[str]" and arg.choices:
        return [c for c in arg.choices if c in value]
    if arg.type == "any":
        return parse_scalar(value)
    return value


def arg_fields(prefix: str, kinds: tuple[str, ...]) -> dict[str, forms.Field]:
    return {
        f"{prefix}{kind}__{arg.name}": arg_field(kind, arg)
        for kind in kinds
        for arg in catalog.KINDS[kind].args
    }


def args_from(form: forms.Form, prefix: str, kind: str) -> dict[str, Any]:
    """The chosen kind's arguments, in the catalog's order (so files stay byte-identical)."""
    spec = catalog.KINDS.get(kind)
    if spec is None:
        return {}
    args = {}
    for arg in spec.args:
        value = cleaned_arg(arg, form.cleaned_data.get(f"{prefix}{kind}__{arg.name}"))
        if value is not None:
            args[arg.name] = value
    return args


def set_initial_args(form: forms.Form, prefix: str, kind: str, args: dict[str, Any]) -> None:
    spec = catalog.KINDS.get(kind)
    for arg in spec.args if spec else ():
        if arg.name in args:
            form.initial[f"{prefix}{kind}__{arg.name}"] = initial_arg(arg, args[arg.name])


def disable_other_kinds(form: forms.Form, prefix: str, kinds: tuple[str, ...], chosen: str) -> None:
    """Only the chosen kind's fields are posted: the others stay disabled until the editor's
    script enables them on a change of kind (a post of every kind's fields would pass
    Django's limit of 1,000 fields on the seed article)."""
    for kind in kinds:
        if kind == chosen:
            continue
        for arg in catalog.KINDS[kind].args:
            field = form.fields[f"{prefix}{kind}__{arg.name}"]
            field.disabled = True


def chosen_kind(form: forms.Form, name: str, stored: str) -> str:
    """The kind a bound form was posted with, else the stored one."""
    return form.data.get(form.add_prefix(name), "") if form.is_bound else stored


_ARG_IN_PROBLEM = re.compile(r"(?:(\w+)\.(\w+):|argument '(\w+)')")


def field_of_problem(form: forms.Form, prefix: str, kind: str, problem: str) -> str | None:
    """The field a validator problem is about: ``args: service.name: ...`` -> that arg's field."""
    match = _ARG_IN_PROBLEM.search(problem.split("args", 1)[-1])
    if match:
        name = match.group(2) or match.group(3)
        field = f"{prefix}{kind}__{name}"
        if field in form.fields:
            return field
    return None


def kind_fieldsets(prefix: str, kinds: tuple[str, ...], slot: str) -> list[tuple]:
    """One fieldset per kind; the editor's script shows the chosen kind's only."""
    return [
        (
            kind,
            {
                "fields": [f"{prefix}{kind}__{a.name}" for a in catalog.KINDS[kind].args],
                "classes": ["step-args", f"slot-{slot}", f"kind-{kind}"],
                "description": catalog.KINDS[kind].summary,
            },
        )
        for kind in kinds
        if catalog.KINDS[kind].args
    ]


def _kind_choices(kinds: tuple[str, ...], blank: bool) -> list[tuple[str, str]]:
    choices = [(k, f"{k} — {catalog.KINDS[k].summary}") for k in kinds]
    return [("", "—"), *choices] if blank else choices


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


# --- the check form -------------------------------------------------------------------------


class BaseCheckForm(forms.ModelForm):
    """A check: its kind's typed arguments, expectation rows and conditions; no JSON."""

    kind = forms.ChoiceField(
        label=_("kind"),
        choices=_kind_choices(catalog.CHECK_KINDS, blank=False),
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
        fields = [
            "key",
            "position",
            "title_ja",
            "title_en",
            "kind",
            "role",
            "codes",
            "when",
            "expect",
            "explanation_ja",
            "explanation_en",
            "fix",
        ]
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
            choices=_kind_choices(catalog.FIX_KINDS, blank=True),
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
        fields = [
            "key",
            "position",
            "title_ja",
            "title_en",
            "kind",
            "args",
            "role",
            "codes",
            "when",
            "expect",
            "explanation_ja",
            "explanation_en",
            "fix",
        ]

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
