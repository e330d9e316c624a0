"""Form fields of the article editor: typed values, expectation rows, one field per argument.

What a KB admin types (``2``, ``Running``, ``null, AES128``, ``500, 4500``) becomes the JSON the
KB stores, and back, so an article saved unchanged stays byte-identical (``kb_export``). The
fields come from the step catalog (``catalog.KINDS``): a kind's arguments, its facts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.db import models
from django.forms.renderers import TemplatesSetting
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from diagnostics import catalog

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
# Every other argument by its name alone (the PowerShell parameter it becomes is in its help).
ARG_NAMES = {
    "path": _("key path"),
    "name": _("VPN connection name"),
    "protocol": _("protocol"),
    "ports": _("ports"),
    "direction": _("direction"),
    "host": _("host"),
    "vpn_connection": _("VPN connection (its server)"),
    "port": _("port"),
    "hours": _("hours back"),
    "max": _("at most (events)"),
    "start_type": _("start type"),
    "action": _("action"),
    "type": _("value type"),
    "tunnel_type": _("tunnel type"),
    "authentication_method": _("authentication method"),
    "encryption_level": _("encryption level"),
    "revert_to_default": _("revert to default"),
    "authentication_transform_constants": _("authentication transform"),
    "cipher_transform_constants": _("cipher transform"),
    "encryption_method": _("encryption method"),
    "integrity_check_method": _("integrity check method"),
    "dh_group": _("DH group"),
    "pfs_group": _("PFS group"),
    "delay_seconds": _("delay (seconds)"),
    "message": _("message to the user"),
    "cancel": _("cancel a scheduled restart"),
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
    label = ARG_LABELS.get((kind, arg.name)) or ARG_NAMES.get(arg.name, arg.name.replace("_", " "))
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
                "description": _(catalog.KINDS[kind].summary),  # marked in the catalog
            },
        )
        for kind in kinds
        if catalog.KINDS[kind].args
    ]


def kind_choices(kinds: tuple[str, ...], blank: bool) -> list[tuple[str, str]]:
    choices = [(k, format_lazy("{} — {}", k, _(catalog.KINDS[k].summary))) for k in kinds]
    return [("", "—"), *choices] if blank else choices
