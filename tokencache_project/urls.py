"""Top-level URL map. Each app mounts its own urls module."""

from django.contrib import admin
from django.urls import include, path

from tokencache_project import health
from tokencache_project.metrics import metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("dashboards.urls")),
    path("", include("agents.urls")),
]
