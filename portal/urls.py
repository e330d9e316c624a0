from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # Pages link the icon; browsers still ask /favicon.ico for the admin's pages and raw files.
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("img/favicon.svg"), permanent=True),
        name="favicon",
    ),
    path(
        "login/",
        auth_views.LoginView.as_view(extra_context={"sso": settings.KAIKETSU_SSO}),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("", include("diagnostics.urls")),
]
if settings.KAIKETSU_SSO:  # the company sign-in: /oidc/authenticate/ and its /oidc/callback/
    urlpatterns.insert(0, path("oidc/", include("mozilla_django_oidc.urls")))
