"""A URLconf with one view that crashes, to see what a client gets from a server error."""

from django.urls import path

from job_system.urls import handler500  # noqa: F401 - Django looks it up on this module


def crash(request):
    return 1 / 0


urlpatterns = [path("broken/", crash)]
