"""Admin-only URLs, mounted under Wagtail's admin by the ``register_admin_urls`` hook (no public URL)."""

from django.urls import path

from . import views

app_name = "auto_renditions"

urlpatterns = [
    path("", views.RenditionsReportView.as_view(), name="report"),
    path("results/", views.RenditionsReportView.as_view(results_only=True), name="report_results"),
    path("retry/<int:image_id>/", views.retry, name="retry"),
]
