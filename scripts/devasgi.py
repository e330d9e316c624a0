"""The ASGI app `make run` serves: the portal plus its static files, as runserver would.

uvicorn, unlike runserver, does not serve static/ (htmx, its SSE extension, CSS), and the demo
has no web server in front of it. Django's own ASGIStaticFilesHandler fills that gap here only;
a production deployment serves static files itself (see README.md).
"""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from portal.asgi import application as portal_application

application = ASGIStaticFilesHandler(portal_application)
