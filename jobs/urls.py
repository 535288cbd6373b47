from django.urls import path
from rest_framework.routers import SimpleRouter

from jobs.views import JobResultViewSet, JobTypeListView, JobViewSet

router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("job-results", JobResultViewSet, basename="job-result")

urlpatterns = [
    path("job-types/", JobTypeListView.as_view(), name="job-types"),
    *router.urls,
]
