import pytest

from schedules.tests.factories import ScheduleFactory


@pytest.fixture
def schedule_factory(db):
    return ScheduleFactory
