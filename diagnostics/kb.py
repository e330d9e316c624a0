"""Knowledge-base files (``kb/*.yaml``): load, validate and write them in canonical form.

The format is described in docs/kb-format.md. This module is pure Python (PyYAML and the step
catalog, no Django) so the ``load_kb`` / ``kb_export`` / ``kb_import`` commands, the matcher's
tests and the CI check of the shipped files all share one reading of a file.

``dump(load(text)) == text`` holds for every shipped file: the files are written by ``dump``,
so an export of an unchanged article produces no diff.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from diagnostics import catalog

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
KEY = SLUG
LANGS = ("ja", "en")
STATUSES = ("published", "draft")

# Key order of each mapping in a file, as docs/kb-format.md lists it. ``dump`` writes keys in
# this order (unknown keys after, in their own order) so files diff cleanly.
ARTICLE_KEYS = (
    "slug",
    "status",
    "error_codes",
    "title",
    "summary",
    "signatures",
    "causes",
    "steps",
    "notes",
    "editor_notes",
    "checks",
    "inferred",
    "fixes",
    "manual_steps",
    "sources",
)
REQUIRED_ARTICLE_KEYS = (
    "slug",
    "status",
    "error_codes",
    "title",
    "summary",
    "signatures",
    "causes",
    "steps",
)
SIGNATURE_KEYS = ("lang", "text", "source", "verified")
CHECK_KEYS = (
    "key",
    "title",
    "kind",
    "args",
    "role",
    "codes",
    "when",
    "expect",
    "explanation",
    "fix",
)
INFERRED_KEYS = ("key", "title", "codes", "explanation", "fix")
ROLES = catalog.ROLES
EVIDENCE_KINDS = catalog.EVIDENCE_KINDS
role_of = catalog.role_of
EXPECT_KEYS = catalog.EXPECT_KEYS
FIX_KEYS = ("key", "title", "steps", "restart_required", "needs_approval")
STEP_KEYS = ("kind", "args")
MANUAL_STEP_KEYS = ("title", "body")
TEXT_FIELDS = ("title", "summary", "causes", "steps", "notes", "editor_notes")
OPTIONAL_TEXT_FIELDS = ("notes", "editor_notes")


# --- reading ---------------------------------------------------------------------------------


def load_text(text: str) -> dict[str, Any]:
    """Parse one article from YAML text (safe loader only: KB files are data, never code)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a KB file must hold one mapping (an article)")
    return data


def load_file(path: str | Path) -> dict[str, Any]:
    """Parse one ``kb/<slug>.yaml`` file."""
    return load_text(Path(path).read_text(encoding="utf-8"))


def load_dir(path: str | Path) -> list[dict[str, Any]]:
    """Parse every ``*.yaml`` article under ``path``, sorted by file name (stable order)."""
    return [load_file(p) for p in sorted(Path(path).glob("*.yaml"))]


# --- validating ------------------------------------------------------------------------------


def _text_problems(where: str, value: Any, required: bool = True) -> list[str]:
    """A human text must be ``{ja: ..., en: ...}`` with both languages non-empty."""
    if value is None:
        return [f"{where}: missing"] if required else []
    if not isinstance(value, dict):
        return [f"{where}: must be a mapping with ja and en"]
    problems = [
        f"{where}.{lang}: missing or empty"
        for lang in LANGS
        if not isinstance(value.get(lang), str) or not value[lang].strip()
    ]
    problems += [f"{where}: unknown language {k!r}" for k in value if k not in LANGS]
    return problems


def _unique_keys(where: str, items: list[Any]) -> tuple[list[str], set[str]]:
    problems, seen = [], set()
    for i, item in enumerate(items):
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not KEY.match(key):
            problems.append(f"{where}[{i}].key: {key!r} is not a valid key ([a-z0-9-])")
        elif key in seen:
            problems.append(f"{where}[{i}].key: {key!r} is used twice")
        else:
            seen.add(key)
    return problems, seen


def _signature_problems(signatures: Any) -> list[str]:
    if not isinstance(signatures, list) or not signatures:
        return ["signatures: at least one is required"]
    problems = []
    for i, sig in enumerate(signatures):
        at = f"signatures[{i}]"
        if not isinstance(sig, dict):
            problems.append(f"{at}: must be a mapping")
            continue
        if sig.get("lang") not in LANGS:
            problems.append(f"{at}.lang: must be one of {', '.join(LANGS)}")
        if not isinstance(sig.get("text"), str) or not sig["text"].strip():
            problems.append(f"{at}.text: missing")
        if not isinstance(sig.get("source"), str) or not sig["source"].strip():
            problems.append(f"{at}.source: every signature names where its wording comes from")
        if not isinstance(sig.get("verified"), bool):
            problems.append(f"{at}.verified: must be true or false")
        problems += [f"{at}: unknown key {k!r}" for k in sig if k not in SIGNATURE_KEYS]
    texts = [
        s["text"] for s in signatures if isinstance(s, dict) and isinstance(s.get("text"), str)
    ]
    problems += [f"signatures: {t!r} is listed twice" for t in set(texts) if texts.count(t) > 1]
    return problems


def _codes_problems(where: str, codes: Any, required: bool = False) -> list[str]:
    if codes is None:
        return [f"{where}: missing"] if required else []
    if (
        not isinstance(codes, list)
        or (required and not codes)
        or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in codes)
    ):
        return [f"{where}: must be a list of positive whole numbers (RAS error codes)"]
    return []


def _when_problems(where: str, when: Any, kinds: dict[str, Any]) -> list[str]:
    """``when`` conditions read ``evidence.code`` or ``<check key>.<fact>`` of the article."""
    if when is None:
        return []
    if not isinstance(when, list) or not when:
        return [f"{where}: must be a non-empty list (or left out)"]
    problems = []
    for i, cond in enumerate(when):
        fact = cond.get("fact") if isinstance(cond, dict) else None
        if not isinstance(fact, str) or "." not in fact:
            problems.append(f"{where}[{i}].fact: write evidence.code or <check key>.<fact>")
            continue
        source, rest = fact.split(".", 1)
        if source == "evidence" and rest != "code":
            problems.append(f"{where}[{i}].fact: evidence has only 'code'")
        elif source != "evidence" and source not in kinds:
            problems.append(f"{where}[{i}].fact: no check with key {source!r}")
            continue
        kind = None if source == "evidence" else kinds[source]
        problems += catalog.expect_problems(f"{where}[{i}]", kind, [{**cond, "fact": rest}])
    return problems


def _check_problems(checks: list[Any], fix_keys: set[str]) -> list[str]:
    problems, _ = _unique_keys("checks", checks)
    kinds = {
        c["key"]: c.get("kind")
        for c in checks
        if isinstance(c, dict) and isinstance(c.get("key"), str)
    }
    for i, check in enumerate(checks):
        at = f"checks[{i}]"
        if not isinstance(check, dict):
            continue
        problems += _text_problems(f"{at}.title", check.get("title"))
        problems += _text_problems(f"{at}.explanation", check.get("explanation"))
        problems += catalog.check_problems(at, check)  # the admin's check form asks the same
        role = check.get("role", role_of(check))
        if role not in ROLES:
            problems.append(f"{at}.role: must be one of {', '.join(ROLES)}")
        elif role == "evidence":
            # Evidence says which causes fit; it is never a problem with a fix of its own.
            if check.get("kind") not in EVIDENCE_KINDS:
                problems.append(f"{at}.role: evidence comes from {', '.join(EVIDENCE_KINDS)}")
            problems += [
                f"{at}.{k}: evidence has no {k} (it is not a cause)"
                for k in ("fix", "codes", "when")
                if k in check
            ]
        problems += _codes_problems(f"{at}.codes", check.get("codes"))
        problems += _when_problems(f"{at}.when", check.get("when"), kinds)
        fix = check.get("fix")
        if fix is not None and (not isinstance(fix, str) or fix not in fix_keys):
            problems.append(f"{at}.fix: no fix with key {fix!r}")
        problems += [f"{at}: unknown key {k!r}" for k in check if k not in CHECK_KEYS]
    return problems


def _inferred_problems(inferred: Any, fix_keys: set[str], check_keys: set[str]) -> list[str]:
    """Causes no check can read (the PSK), proven by ruling out the others of their codes."""
    if inferred is None:
        return []
    if not isinstance(inferred, list):
        return ["inferred: must be a list"]
    problems, keys = _unique_keys("inferred", inferred)
    problems += [f"inferred: {k!r} is also a check key" for k in sorted(keys & check_keys)]
    for i, cause in enumerate(inferred):
        at = f"inferred[{i}]"
        if not isinstance(cause, dict):
            problems.append(f"{at}: must be a mapping")
            continue
        problems += _text_problems(f"{at}.title", cause.get("title"))
        problems += _text_problems(f"{at}.explanation", cause.get("explanation"))
        problems += _codes_problems(f"{at}.codes", cause.get("codes"), required=True)
        fix = cause.get("fix")
        if fix is not None and (not isinstance(fix, str) or fix not in fix_keys):
            problems.append(f"{at}.fix: no fix with key {fix!r}")
        problems += [f"{at}: unknown key {k!r}" for k in cause if k not in INFERRED_KEYS]
    return problems


def _fix_problems(fixes: list[Any]) -> list[str]:
    problems, _ = _unique_keys("fixes", fixes)
    for i, fix in enumerate(fixes):
        at = f"fixes[{i}]"
        if not isinstance(fix, dict):
            continue
        problems += _text_problems(f"{at}.title", fix.get("title"))
        problems += catalog.fix_steps_problems(f"{at}.steps", fix.get("steps"))  # and its fix form
        for flag in ("restart_required", "needs_approval"):
            if not isinstance(fix.get(flag, False), bool):
                problems.append(f"{at}.{flag}: must be true or false")
        problems += [f"{at}: unknown key {k!r}" for k in fix if k not in FIX_KEYS]
    return problems


def validate(article: dict[str, Any]) -> list[str]:
    """Return the problems of one parsed article (empty when it is valid).

    Checks required fields, ja+en on every human text, slug and key shapes, unique keys, that
    every ``fix`` a check names exists, and the typed steps and expectations with the one
    validator the admin uses too (``catalog.check_problems``, ``catalog.fix_steps_problems``).
    """
    if not isinstance(article, dict):
        return ["an article must be a mapping"]
    problems = [f"{k}: required" for k in REQUIRED_ARTICLE_KEYS if k not in article]
    problems += [f"unknown key {k!r}" for k in article if k not in ARTICLE_KEYS]
    slug = article.get("slug")
    if not isinstance(slug, str) or not SLUG.match(slug):
        problems.append(f"slug: {slug!r} is not [a-z0-9-]")
    if article.get("status") not in STATUSES:
        problems.append(f"status: must be one of {', '.join(STATUSES)}")
    codes = article.get("error_codes")
    if not isinstance(codes, list) or any(
        isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in codes
    ):
        problems.append("error_codes: must be a list of positive whole numbers")
    elif len(set(codes)) != len(codes):
        problems.append("error_codes: a code is listed twice")
    for field in TEXT_FIELDS:
        required = field not in OPTIONAL_TEXT_FIELDS
        problems += _text_problems(field, article.get(field), required=required)
    problems += _signature_problems(article.get("signatures"))

    fixes = article.get("fixes") or []
    checks = article.get("checks") or []
    if not isinstance(fixes, list) or not isinstance(checks, list):
        return [*problems, "checks and fixes must be lists"]
    _, fix_keys = _unique_keys("fixes", fixes)
    problems += _fix_problems(fixes)
    problems += _check_problems(checks, fix_keys)
    check_keys = {c["key"] for c in checks if isinstance(c, dict) and isinstance(c.get("key"), str)}
    problems += _inferred_problems(article.get("inferred"), fix_keys, check_keys)

    manual = article.get("manual_steps") or []
    if not isinstance(manual, list):
        problems.append("manual_steps: must be a list")
        manual = []
    for i, step in enumerate(manual):
        if not isinstance(step, dict):
            problems.append(f"manual_steps[{i}]: must be a mapping")
            continue
        problems += _text_problems(f"manual_steps[{i}].title", step.get("title"))
        problems += _text_problems(f"manual_steps[{i}].body", step.get("body"))
    sources = article.get("sources") or []
    if not isinstance(sources, list) or any(not isinstance(s, str) for s in sources):
        problems.append("sources: must be a list of texts")
    return problems


# --- writing ---------------------------------------------------------------------------------


class _Flow(dict):
    """A mapping written on one line: ``{fact: status, op: eq, value: Running}``."""


class _FlowList(list):
    """A list written on one line: ``[789, 791]``."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes prose as ``|`` blocks and keeps our key order."""

    def ignore_aliases(self, data: Any) -> bool:  # repeated args stay written out in full
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_flow(dumper: yaml.SafeDumper, value: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=True)


def _represent_flow_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


def _represent_dict(dumper: yaml.SafeDumper, value: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=False)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(_Flow, _represent_flow)
_Dumper.add_representer(_FlowList, _represent_flow_list)


def _ordered(mapping: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``mapping`` with ``keys`` first in that order, then any others as they came."""
    out = {k: mapping[k] for k in keys if k in mapping}
    out.update({k: v for k, v in mapping.items() if k not in out})
    return out


def _flow_value(value: Any) -> Any:
    """Args and expected values are short data: lists and mappings inside them go on one line."""
    if isinstance(value, dict):
        return _Flow({k: _flow_value(v) for k, v in value.items()})
    if isinstance(value, list):
        return _FlowList(_flow_value(v) for v in value)
    return value


def _text(value: Any) -> Any:
    return _ordered(value, LANGS) if isinstance(value, dict) else value


def _step(step: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(step, dict):
        return step
    out = _ordered(step, keys)
    if isinstance(out.get("args"), dict):
        # Args in the catalog's order: a fixed order that survives storage in PostgreSQL's
        # jsonb (which reorders keys), so kb_export gives back the files byte for byte.
        spec = catalog.KINDS.get(out.get("kind", ""))
        order = tuple(a.name for a in spec.args) if spec else ()
        out["args"] = _flow_value(_ordered(out["args"], order))
    for conditions in ("when", "expect"):
        if isinstance(out.get(conditions), list):
            out[conditions] = [
                _flow_value(_ordered(e, EXPECT_KEYS)) if isinstance(e, dict) else e
                for e in out[conditions]
            ]
    if isinstance(out.get("codes"), list):
        out["codes"] = _FlowList(out["codes"])
    for field in ("title", "explanation"):
        if field in out:
            out[field] = _text(out[field])
    if isinstance(out.get("steps"), list):
        out["steps"] = [_step(s, STEP_KEYS) for s in out["steps"]]
    return out


def canonical(article: dict[str, Any]) -> dict[str, Any]:
    """The article rearranged into the file's canonical key order and styles."""
    out = _ordered(article, ARTICLE_KEYS)
    if isinstance(out.get("error_codes"), list):
        out["error_codes"] = _FlowList(out["error_codes"])
    for field in TEXT_FIELDS:
        if field in out:
            out[field] = _text(out[field])
    if isinstance(out.get("signatures"), list):
        out["signatures"] = [
            _ordered(s, SIGNATURE_KEYS) if isinstance(s, dict) else s for s in out["signatures"]
        ]
    for field, keys in (("checks", CHECK_KEYS), ("inferred", INFERRED_KEYS), ("fixes", FIX_KEYS)):
        if isinstance(out.get(field), list):
            out[field] = [_step(c, keys) for c in out[field]]
    if isinstance(out.get("manual_steps"), list):
        out["manual_steps"] = [
            {k: _text(v) for k, v in _ordered(m, MANUAL_STEP_KEYS).items()}
            if isinstance(m, dict)
            else m
            for m in out["manual_steps"]
        ]
    return out


def dump(article: dict[str, Any]) -> str:
    """Canonical YAML text of one article: what ``kb/<slug>.yaml`` and ``kb_export`` hold."""
    return yaml.dump(
        canonical(article),
        Dumper=_Dumper,
        allow_unicode=True,
        sort_keys=False,
        width=10**6,  # never fold a long line: a signature is one line, diffs stay readable
        indent=2,
    )
