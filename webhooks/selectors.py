"""Reads about webhook endpoints that take more than a queryset."""

from django.db.models import Q

from webhooks.models import Endpoint


def callback_secrets(job_ids) -> dict:
    """The signing secret of each job's callback endpoint, by job id."""
    return dict(Endpoint.objects.filter(job_id__in=job_ids).values_list("job_id", "secret"))


def live_endpoints():
    """Enabled endpoints that may still get deliveries: standing ones, and untold callbacks.

    A callback hears one event, its job's terminal one, so it is live until that event has
    its delivery, not merely until the job finishes: a finish whose announcement was lost (a
    Redis wipe emptied the hooked owners) is still to be fanned out, by Beat's sweep.
    """
    return Endpoint.objects.filter(Q(job=None) | Q(deliveries=None), enabled=True)
