import factory
from django.conf import settings
from django.utils import timezone

from jobs.models import Job, JobResult
from jobs.queue import queue_for
from jobs.services.execution import result_size
from users.tests.factories import UserFactory


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"job {n}")
    job_type = "echo"
    parameters = factory.LazyFunction(lambda: {"message": "hello", "data": None})
    queue = factory.LazyAttribute(lambda job: queue_for(job.job_type))
    status = Job.Status.PENDING
    # A pending job is admitted (it has a message), as an idle system admits jobs at once, so
    # that a worker may claim it; a test of admission sets enqueued_at=None.
    enqueued_at = factory.LazyAttribute(
        lambda job: timezone.now() if job.status == Job.Status.PENDING else None
    )
    # A running job holds a lease (the job_running_has_lease constraint), as after a claim.
    lease_expires_at = factory.LazyAttribute(
        lambda job: (
            timezone.now() + settings.JOB_LEASE if job.status == Job.Status.IN_PROGRESS else None
        )
    )


class JobResultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobResult

    job = factory.SubFactory(JobFactory, status=Job.Status.COMPLETED, progress=100)
    output = factory.LazyFunction(lambda: {"message": "hello", "data": None})
    output_bytes = factory.LazyAttribute(lambda result: result_size(result.output))
    duration_ms = 5
