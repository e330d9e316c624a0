"""Project-wide middleware: a request that needed Redis while it stalled or was gone says so.

Redis calls time out (settings.REDIS_TIMEOUTS); the error they raise would otherwise be a 500
with a stack trace. It is an outage of a service, not a bug: answer 503 with a page that tells
the person to try again shortly, in their language (issue #16).
"""

from __future__ import annotations

import logging

import redis
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
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
