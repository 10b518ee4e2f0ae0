"""HTTP routes of this app: the dashboards under /dashboards/."""

from django.urls import URLPattern, URLResolver, path

from dashboards import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("dashboards/", views.overview, name="dashboards"),
    path("dashboards/live/", views.live, name="dashboards_live"),
    path("dashboards/agents/<slug:slug>/", views.agent_page, name="dashboards_agent"),
    path("dashboards/policies/<int:pk>/", views.policy_page, name="dashboards_policy"),
    path("dashboards/data/figures.json", views.figures_json, name="dashboards_json"),
    path("dashboards/data/<slug:chart>.csv", views.chart_csv, name="dashboards_csv"),
]
