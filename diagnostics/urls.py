from django.urls import include, path

from diagnostics.views import events, pages

app_name = "diagnostics"

urlpatterns = [
    path("", pages.home, name="home"),
    path("articles/<slug:slug>/", pages.article_detail, name="article"),
    path("jobs/", pages.job_create, name="job-create"),
    path("jobs/<int:pk>/", pages.job_detail, name="job-detail"),
    path("jobs/<int:pk>/events/", events.job_events, name="job-events"),
    path("jobs/<int:pk>/fix/", pages.fix_confirm, name="fix-confirm"),
    path("jobs/<int:pk>/rollback/", pages.job_rollback, name="job-rollback"),
    path("jobs/<int:pk>/resume/", pages.job_resume, name="job-resume"),
    path("jobs/<int:pk>/retry/", pages.job_retry, name="job-retry"),
    path("jobs/<int:pk>/handover/", pages.job_handover, name="job-handover"),
    path("approvals/", pages.approvals, name="approvals"),
    path("approvals/<int:pk>/", pages.approval_decide, name="approval-decide"),
    path("helpdesk/", include("diagnostics.history_urls")),
    path("console/", include("diagnostics.console_urls")),
]
