"""Project-wide middleware: a request that needed Redis while it stalled or was gone says so;
a parameter holding a NUL character is refused before anything reads it.

Redis calls time out (settings.REDIS_TIMEOUTS); the error they raise would otherwise be a 500
with a stack trace. It is an outage of a service, not a bug: answer 503 with a page that tells
the person to try again shortly, in their language (issue #16).
"""

from __future__ import annotations

import logging

import redis
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

# redis-py's own errors (cache, live streams) and kombu's (the Celery broker).
REDIS_DOWN = (redis.RedisError, OperationalError)
RETRY_AFTER_S = 30


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


def _nul_parameter(params: QueryDict) -> str | None:
    """The name of the first parameter whose name or a value holds a NUL, else None."""
    for name, values in params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return name.replace("\x00", "\\0")
    return None


class RefuseNulMiddleware(MiddlewareMixin):
    """A NUL character in a query or form parameter is never meant, and PostgreSQL can neither
    store nor compare it: an admin list filter given one failed deep in the ORM with a 500
    (found by tests/test_fuzz.py on PostgreSQL). Refuse such a request, whole, with a 400 that
    names the parameter; nothing has run yet. Form fields keep their own NUL check."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        name = _nul_parameter(request.GET)
        if name is None and request.method == "POST":
            name = _nul_parameter(request.POST)
        if name is None:
            return None
        message = _("The request was refused: “%(name)s” contains a NUL character.")
        return HttpResponseBadRequest(message % {"name": name}, content_type="text/plain")
