"""Helpdesk history URLs, included under /helpdesk/ in the "diagnostics" namespace."""

from django.urls import path

from diagnostics.views import history

urlpatterns = [
    path("jobs/", history.job_list, name="history"),
    path("jobs/export.csv", history.job_export, name="history-export"),
    path("jobs/<int:pk>/", history.job_detail, name="helpdesk-job"),
    path("jobs/<int:pk>/rerun/", history.job_rerun, name="helpdesk-job-rerun"),
    path("jobs/<int:pk>/cancel/", history.job_cancel, name="helpdesk-job-cancel"),
]
