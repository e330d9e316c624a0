from django.urls import include, path

from diagnostics.views import agent, events, handovers, kb, pages

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
    path("jobs/<int:pk>/handover/", handovers.job_handover, name="job-handover"),
    path("mine/", handovers.my_jobs, name="my-jobs"),
    path("handovers/", handovers.handover_create, name="handover-create"),
    path("handovers/<int:pk>/", handovers.handover_detail, name="handover"),
    path("handovers/<int:pk>/reply/", handovers.handover_reply, name="handover-reply"),
    path("helpdesk/handovers/", handovers.inbox, name="inbox"),
    path("helpdesk/handovers/<int:pk>/", handovers.inbox_detail, name="inbox-detail"),
    path("helpdesk/handovers/<int:pk>/reply/", handovers.inbox_reply, name="inbox-reply"),
    path("helpdesk/handovers/<int:pk>/take/", handovers.inbox_take, name="inbox-take"),
    path("helpdesk/handovers/<int:pk>/close/", handovers.inbox_close, name="inbox-close"),
    path("kb/articles/<int:pk>/try/", kb.try_on_machine, name="kb-try-machine"),
    path("approvals/", pages.approvals, name="approvals"),
    path("approvals/<int:pk>/", pages.approval_decide, name="approval-decide"),
    path("helpdesk/", include("diagnostics.history_urls")),
    path("console/", include("diagnostics.console_urls")),
    # The agent's endpoints (agent/protocol.json): the only ones the internet must reach.
    path("agent/v1/enrol", agent.enrol, name="agent-enrol"),
    path("agent/v1/work", agent.work, name="agent-work"),
    path("agent/v1/tasks/<int:task>/lines", agent.lines, name="agent-lines"),
]
