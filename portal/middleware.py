"""Project-wide middleware: a request that needed Redis while it stalled or was gone says so;
a query parameter holding a NUL character never reaches the database.

Redis calls time out (settings.REDIS_TIMEOUTS); the error they raise would otherwise be a 500
with a stack trace. It is an outage of a service, not a bug: answer 503 with a page that tells
the person to try again shortly, in their language (issue #16).
"""

from __future__ import annotations

import logging

import redis
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

# redis-py's own errors (cache, live streams) and kombu's (the Celery broker).
REDIS_DOWN = (redis.RedisError, OperationalError)
RETRY_AFTER_S = 30
REPLACEMENT = "\ufffd"


class RedisUnavailableMiddleware:
    """Turn a Redis time-out or refusal during a request into a 503 page."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, REDIS_DOWN):
            return None
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exception)
        response = render(request, "503.html", status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response


def _without_nul(params: QueryDict) -> QueryDict:
    """The same parameters, each NUL replaced by U+FFFD (what a decoder makes of garbage)."""
    clean = QueryDict(mutable=True)
    for name, values in params.lists():
        clean.setlist(
            name.replace("\x00", REPLACEMENT), [v.replace("\x00", REPLACEMENT) for v in values]
        )
    clean._mutable = False
    return clean


class NulSafeQueryMiddleware(MiddlewareMixin):
    """A NUL character in a query parameter is never meant, and PostgreSQL can neither store
    nor compare it: an admin list filter given one failed deep in the ORM with a 500 (found by
    tests/test_fuzz.py on PostgreSQL). A query only reads, so the NUL becomes U+FFFD and the
    page answers as for any text that matches nothing (a pasted error message full of binary
    garbage still gets its answer). Forms that write keep Django's own refusal of NUL, with
    its message beside the field."""

    def process_request(self, request: HttpRequest) -> None:
        if any("\x00" in name or "\x00" in "".join(values) for name, values in request.GET.lists()):
            request.GET = _without_nul(request.GET)
