"""Reads about webhook endpoints that take more than a queryset."""

from webhooks.models import Endpoint


def callback_secrets(job_ids) -> dict:
    """The signing secret of each job's callback endpoint, by job id."""
    return dict(Endpoint.objects.filter(job_id__in=job_ids).values_list("job_id", "secret"))
