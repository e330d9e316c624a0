"""Middleware for the test web server only (tests/settings.py adds it)."""

from django.contrib.contenttypes.models import ContentType


class ForgetContentTypes:
    """Read content types afresh on every request.

    The browser tests' web server outlives the tests: a transactional test flushes the
    database and Django recreates the content types, under new ids. A server that cached the
    old ids then wrote the admin's log entries against rows that are gone (a 500 on the first
    admin save in a later test). In production content types never change under a server.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        ContentType.objects.clear_cache()
        return self.get_response(request)
