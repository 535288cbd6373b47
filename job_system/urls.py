from django.contrib import admin
from django.urls import include, path, re_path

from events.views import EventStreamView
from job_system.api_index import ApiIndexView
from job_system.flower_proxy import flower_proxy_view
from job_system.health import LivenessView, ReadinessView
from job_system.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", ApiIndexView.as_view(), name="api-index"),
    # /api/health/ was the readiness check before liveness and readiness were apart; kept for
    # the load balancers and scripts that ask it.
    path("api/health/", ReadinessView.as_view(), name="health"),
    path("api/health/live/", LivenessView.as_view(), name="health-live"),
    path("api/health/ready/", ReadinessView.as_view(), name="health-ready"),
    # Prometheus scrapes /metrics by default; a 404 unless METRICS_TOKEN or _ALLOWED_IPS is set.
    path("metrics", metrics_view, name="metrics"),
    # Flower, for staff: the web process forwards to the Flower process (job_system.flower_proxy).
    re_path(r"^flower/(?P<path>.*)$", flower_proxy_view, name="flower"),
    # Served by the events process; here it is checked, documented and answered with 421.
    path("api/events/", EventStreamView.as_view(), name="event-stream"),
    # Jobs before accounts: Django tries patterns in order, and job submissions are the
    # requests that come by the thousand.
    path("api/", include("jobs.urls")),
    path("api/", include("webhooks.urls")),
    path("api/", include("schedules.urls")),
    path("api/", include("users.urls")),
    path("", include("job_system.docs")),
]

# JSON, never an HTML page or a traceback, when something breaks; 503 while the database is
# out of reach.
handler400 = "rest_framework.exceptions.bad_request"
handler404 = "job_system.exceptions.page_not_found"
handler500 = "job_system.exceptions.server_error"
