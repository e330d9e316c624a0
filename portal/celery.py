"""The Celery app: `celery -A portal worker -B`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("kaiketsu")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
