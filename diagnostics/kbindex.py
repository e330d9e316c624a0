"""The matcher's index in a Django process: built once, rebuilt when the KB version changes.

Admin edits and `load_kb` bump a version stamp in the shared cache; every web and worker
process compares its stamp on use (one cache read) and rebuilds only when it differs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from django.core.cache import cache
from django.db.models import Prefetch

from diagnostics import matching
from diagnostics.models import Article, Signature

log = logging.getLogger(__name__)

VERSION_KEY = "kb:version"
_lock = threading.Lock()
_state: dict[str, Any] = {"stamp": None, "index": None}


def bump_version() -> str:
    """Tell every process that the knowledge base changed."""
    stamp = uuid.uuid4().hex
    try:
        cache.set(VERSION_KEY, stamp, timeout=None)
    except Exception as exc:  # Redis down: this process still rebuilds below
        log.warning("KB version stamp not shared: %s", exc)
    _state["stamp"] = None
    return stamp


def _current_stamp() -> str:
    try:
        stamp = cache.get(VERSION_KEY)
        if stamp is None:
            stamp = uuid.uuid4().hex
            cache.add(VERSION_KEY, stamp, timeout=None)
            stamp = cache.get(VERSION_KEY, stamp)
        return stamp
    except Exception:
        # Without the cache, keep what we have rather than rebuilding on every request.
        return _state["stamp"] or "no-cache"


def article_dicts(include_drafts: bool = False) -> list[dict[str, Any]]:
    """Articles in the shape diagnostics/kb.py loads (what the matcher indexes).

    Published ones only, unless ``include_drafts`` (the admin's "try a text" page), where
    drafts are presented as published so the matcher ranks them too.
    """
    articles = (
        Article.objects.all()
        if include_drafts
        else Article.objects.filter(status=Article.Status.PUBLISHED)
    )
    articles = articles.prefetch_related(
        Prefetch("signatures", queryset=Signature.objects.order_by("id"))
    )
    return [
        {
            "slug": a.slug,
            "status": Article.Status.PUBLISHED if include_drafts else a.status,
            "title": {"ja": a.title_ja, "en": a.title_en},
            "error_codes": list(a.error_codes or []),
            "signatures": [{"lang": s.lang, "text": s.text} for s in a.signatures.all()],
        }
        for a in articles
    ]


def get_index() -> matching.Index:
    stamp = _current_stamp()
    if _state["index"] is not None and _state["stamp"] == stamp:
        return _state["index"]
    with _lock:
        if _state["index"] is None or _state["stamp"] != stamp:
            _state["index"] = matching.build_index(article_dicts())
            _state["stamp"] = stamp
    return _state["index"]


def find(text: str, lang: str, top: int = 5) -> matching.Result:
    return matching.match(get_index(), text, top=top, lang=lang)
