import factory

from schedules.models import Schedule
from users.tests.factories import UserFactory


class ScheduleFactory(factory.django.DjangoModelFactory):
    """An every-minute echo schedule, due now unless next_fire_at says otherwise."""

    class Meta:
        model = Schedule

    owner = factory.SubFactory(UserFactory, is_verified=True)
    name = factory.Sequence(lambda n: f"schedule {n}")
    interval_seconds = 60
    job_type = "echo"
    parameters = factory.LazyFunction(lambda: {"message": "tick", "data": None})
