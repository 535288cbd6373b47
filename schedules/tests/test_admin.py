"""Staff see users' schedules with the API's preview, and can pause and resume them."""

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from schedules.dispatch import schedules_dispatch_due
from schedules.models import Schedule
from schedules.selectors import next_runs

pytestmark = pytest.mark.django_db

T = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    return client


def test_a_schedule_shows_its_next_and_last_runs(staff_client, schedule_factory):
    schedule = schedule_factory(next_fire_at=T)
    schedules_dispatch_due(now=T)
    schedule.refresh_from_db()

    listing = staff_client.get("/admin/schedules/schedule/")
    detail = staff_client.get(f"/admin/schedules/schedule/{schedule.pk}/change/")

    assert listing.status_code == detail.status_code == 200
    assert schedule.name in listing.content.decode()
    page = detail.content.decode()
    for run in next_runs(schedule):
        assert run["fire_time"].isoformat() in page
    assert f"{T.isoformat()} tick, job {schedule.latest_job_id}: pending" in page


def test_staff_pause_and_resume_a_users_schedule(staff_client, schedule_factory):
    schedule = schedule_factory(next_fire_at=T)
    url = "/admin/schedules/schedule/"

    staff_client.post(url, {"action": "pause", "_selected_action": [schedule.pk]})

    assert Schedule.objects.get(pk=schedule.pk).enabled is False
    assert schedules_dispatch_due(now=T) == 0

    staff_client.post(url, {"action": "resume", "_selected_action": [schedule.pk]})

    resumed = Schedule.objects.get(pk=schedule.pk)
    assert resumed.enabled is True
    assert resumed.next_fire_at == next(resumed.timing().ticks_from(timezone.now()))


def test_staff_cannot_add_or_edit_a_schedules_fields(staff_client, schedule_factory):
    schedule = schedule_factory(next_fire_at=T, name="kept")

    assert staff_client.get("/admin/schedules/schedule/add/").status_code == 403
    staff_client.post(f"/admin/schedules/schedule/{schedule.pk}/change/", {"name": "changed"})

    assert Schedule.objects.get(pk=schedule.pk).name == "kept"
