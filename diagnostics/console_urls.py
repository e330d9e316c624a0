"""Helpdesk console URLs, included under "console/" in the "diagnostics" namespace."""

from django.urls import path

from diagnostics.views import console, scans

urlpatterns = [
    path("", console.dashboard_view, name="dashboard"),
    path("machines/", console.machines, name="machines"),
    path("unmatched/", console.unmatched_view, name="unmatched"),
    path("scans/", scans.scan_list, name="scans"),
    path("scans/<int:pk>/", scans.scan_detail, name="scan"),
    path("scans/<int:pk>/export.csv", scans.scan_export, name="scan-export"),
    path("machines/import/", console.machines_import, name="machines-import"),
    path("machines/<int:pk>/test/", console.machine_test, name="machine-test"),
    path(
        "machines/<int:pk>/test/<str:token>/",
        console.machine_test_result,
        name="machine-test-result",
    ),
]
