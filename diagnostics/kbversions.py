"""Versions of articles: each admin save kept in file form, shown as a diff, restorable.

A version is the article's ``kb.dump`` text, the very form ``kb_export`` writes, so a diff
between two versions reads like a diff of the files in ``kb/``. Restoring writes an old
version back through ``kbstore.save_article`` (the one validator) as a draft: nothing
restored reaches employees until it is published again, and restored fix steps that differ
from the current ones wait for a second KB admin like any other change of steps.
"""

from __future__ import annotations

import difflib
from typing import Any

from django.db import transaction
from django.db.models import Max

from diagnostics import kb, kbindex, kbstore
from diagnostics.models import Article, ArticleVersion, Fix


def record(article: Article, user: Any, note: str = "") -> ArticleVersion | None:
    """Keep the article as it is now; None when nothing changed since the last version."""
    text = kb.dump(kbstore.article_data(article))
    last = article.versions.order_by("-number").first()
    if last is not None and last.text == text:
        return None
    number = (article.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    return ArticleVersion.objects.create(
        article=article, number=number, saved_by=user, note=note, text=text
    )


def diff(version: ArticleVersion, previous: ArticleVersion | None) -> list[str]:
    """What this version changed, as unified-diff lines of the article's file."""
    before = previous.text.splitlines() if previous else []
    after = version.text.splitlines()
    name = f"{version.article.slug}.yaml"
    old = f"{name} v{previous.number}" if previous else "(new)"
    return list(difflib.unified_diff(before, after, old, f"{name} v{version.number}", lineterm=""))


def history(article: Article) -> list[tuple[ArticleVersion, list[str]]]:
    """Every version, newest first, each with its diff from the one before."""
    versions = list(article.versions.select_related("saved_by").order_by("number"))
    pairs = [(v, diff(v, versions[i - 1] if i else None)) for i, v in enumerate(versions)]
    return pairs[::-1]


@transaction.atomic
def restore(version: ArticleVersion, user: Any) -> Article:
    """Write ``version`` back as a draft of its article and keep that as a new version."""
    article = version.article
    earlier = {f.key: f for f in article.fixes.all()}
    data = {**kb.load_text(version.text), "status": Article.Status.DRAFT.value}
    article = kbstore.save_article(data)
    for fix in article.fixes.all():
        _carry_review(fix, earlier.get(fix.key), user)
    record(article, user, note=f"restored version {version.number}")
    kbindex.bump_version()
    return article


def _carry_review(fix: Fix, before: Fix | None, user: Any) -> None:
    """Unchanged steps keep their review; any other restored steps are ``user``'s change."""
    same = (
        before is not None
        and before.steps == fix.steps
        and before.needs_approval == fix.needs_approval
    )
    if same:
        fix.steps_author, fix.steps_approved_by = before.steps_author, before.steps_approved_by
    else:
        fix.steps_changed_by(user)
    fix.save(update_fields=["steps_author", "steps_approved_by"])
