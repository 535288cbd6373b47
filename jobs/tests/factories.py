import factory

from jobs.models import Job, JobResult
from users.tests.factories import UserFactory


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"job {n}")
    job_type = "echo"
    parameters = factory.LazyFunction(lambda: {"message": "hello", "data": None})


class JobResultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobResult

    job = factory.SubFactory(JobFactory, status=Job.Status.COMPLETED, progress=100)
    output = factory.LazyFunction(lambda: {"message": "hello", "data": None})
    duration_ms = 5
