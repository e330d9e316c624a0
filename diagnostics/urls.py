from django.urls import include, path

from diagnostics.views import events, pages

app_name = "diagnostics"

urlpatterns = [
    path("", pages.home, name="home"),
    path("articles/<slug:slug>/", pages.article_detail, name="article"),
    path("jobs/", pages.job_create, name="job-create"),
    path("jobs/<int:pk>/", pages.job_detail, name="job-detail"),
    path("jobs/<int:pk>/events/", events.job_events, name="job-events"),
    path("helpdesk/", include("diagnostics.history_urls")),
    path("console/", include("diagnostics.console_urls")),
]
