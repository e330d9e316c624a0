"""Knowledge-base files <-> database rows, so `kb_import` then `kb_export` gives the same YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from diagnostics import kb, kbindex
from diagnostics.models import Article, Check, Fix, Signature

BILINGUAL = ("summary", "causes", "steps", "notes", "editor_notes")


class KBError(ValueError):
    """A knowledge-base file does not validate; nothing was written."""


def _pair(obj: Any, field: str) -> dict[str, str]:
    return {"ja": getattr(obj, f"{field}_ja"), "en": getattr(obj, f"{field}_en")}


def _split(data: dict[str, Any], field: str) -> dict[str, str]:
    value = data.get(field) or {}
    return {f"{field}_ja": value.get("ja", ""), f"{field}_en": value.get("en", "")}


@transaction.atomic
def save_article(data: dict[str, Any]) -> Article:
    """Create or replace one article (and its signatures, checks and fixes) from file data."""
    problems = kb.validate(data)
    if problems:
        raise KBError(f"{data.get('slug', '?')}: " + "; ".join(problems))
    fields: dict[str, Any] = {
        "status": data["status"],
        "error_codes": list(data.get("error_codes") or []),
        "manual_steps": data.get("manual_steps") or [],
        "sources": data.get("sources") or [],
        "inferred": data.get("inferred") or [],
        **_split(data, "title"),
    }
    for field in BILINGUAL:
        fields.update(_split(data, field))
    article, _ = Article.objects.update_or_create(slug=data["slug"], defaults=fields)
    article.signatures.all().delete()
    Signature.objects.bulk_create(
        Signature(
            article=article,
            lang=s["lang"],
            text=s["text"],
            source=s.get("source", ""),
            verified=s.get("verified", True),
        )
        for s in data.get("signatures") or []
    )
    article.checks.all().delete()
    article.fixes.all().delete()
    fixes = {}
    for position, f in enumerate(data.get("fixes") or []):
        fixes[f["key"]] = Fix.objects.create(
            article=article,
            key=f["key"],
            position=position,
            steps=f["steps"],
            restart_required=bool(f.get("restart_required", False)),
            needs_approval=bool(f.get("needs_approval", False)),
            **_split(f, "title"),
        )
    for position, c in enumerate(data.get("checks") or []):
        Check.objects.create(
            article=article,
            key=c["key"],
            position=position,
            kind=c["kind"],
            args=c.get("args") or {},
            expect=c.get("expect") or [],
            role=kb.role_of(c),
            codes=c.get("codes") or [],
            when=c.get("when") or [],
            fix=fixes.get(c.get("fix")),
            **_split(c, "title"),
            **_split(c, "explanation"),
        )
    return article


def article_data(article: Article) -> dict[str, Any]:
    """The file form of an article (kb.dump turns it into the canonical YAML text)."""
    data: dict[str, Any] = {
        "slug": article.slug,
        "status": article.status,
        "error_codes": list(article.error_codes),
        "title": _pair(article, "title"),
        "summary": _pair(article, "summary"),
        "signatures": [
            {"lang": s.lang, "text": s.text, "source": s.source, "verified": s.verified}
            for s in article.signatures.order_by("id")
        ],
        "causes": _pair(article, "causes"),
        "steps": _pair(article, "steps"),
    }
    for field in kb.OPTIONAL_TEXT_FIELDS:  # written only when there is something to say
        if getattr(article, f"{field}_ja") or getattr(article, f"{field}_en"):
            data[field] = _pair(article, field)
    checks = []
    for c in article.checks.select_related("fix").order_by("position", "id"):
        check = {"key": c.key, "title": _pair(c, "title"), "kind": c.kind, "args": c.args}
        if c.role != kb.role_of({"kind": c.kind}):  # written only where it is not the default
            check["role"] = c.role
        for field in ("codes", "when", "expect"):
            if getattr(c, field):
                check[field] = getattr(c, field)
        check["explanation"] = _pair(c, "explanation")
        if c.fix:
            check["fix"] = c.fix.key
        checks.append(check)
    # The file format always carries these lists, empty or not (docs/kb-format.md).
    data["checks"] = checks
    if article.inferred:
        data["inferred"] = article.inferred
    data["fixes"] = [
        {
            "key": f.key,
            "title": _pair(f, "title"),
            "steps": f.steps,
            "restart_required": f.restart_required,
            "needs_approval": f.needs_approval,
        }
        for f in article.fixes.order_by("position", "id")
    ]
    data["manual_steps"] = article.manual_steps or []
    data["sources"] = article.sources or []
    return data


def import_dir(path: str | Path) -> list[Article]:
    """Validate every file first, then write them all in one transaction."""
    datas = kb.load_dir(path)
    problems = [f"{d.get('slug', '?')}: {p}" for d in datas for p in kb.validate(d)]
    if problems:
        raise KBError("\n".join(problems))
    with transaction.atomic():
        articles = [save_article(d) for d in datas]
    kbindex.bump_version()
    return articles


def export_dir(path: str | Path) -> list[Path]:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for article in Article.objects.order_by("slug"):
        target = out / f"{article.slug}.yaml"
        target.write_text(kb.dump(article_data(article)), encoding="utf-8")
        written.append(target)
    return written
