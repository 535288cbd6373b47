import django_filters

from jobs import handlers
from jobs.models import Job, JobResult


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    job_type = django_filters.ChoiceFilter(
        choices=lambda: [(name, name) for name in handlers.names()]
    )

    class Meta:
        model = Job
        fields = ["status", "job_type"]


class JobResultFilter(django_filters.FilterSet):
    job = django_filters.UUIDFilter(field_name="job_id", help_text="Only the result of this job.")

    class Meta:
        model = JobResult
        fields = ["job"]
