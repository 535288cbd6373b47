"""Deleting a schedule while the dispatcher or a trigger adds a run under it.

Django deletes a schedule's runs as it collected them, then the schedule. A run that another
process added in between made the delete's commit fail, as it did for webhook endpoints
(webhooks/tests/test_endpoint_delete.py). Each test adds that run from another connection at
that very moment: once the delete has collected, as its pre_delete signal fires.
"""

from datetime import UTC, datetime, timedelta

import pytest

from jobs.tests.concurrency import admin_delete, racing_the_delete
from schedules.dispatch import schedules_dispatch_due
from schedules.models import Schedule, ScheduleRun
from schedules.services import schedule_delete, schedule_trigger
from schedules.views import ScheduleViewSet

pytestmark = pytest.mark.django_db(transaction=True)

T = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # Far enough ahead to be in the future.


def dispatch_the_tick() -> int:
    return schedules_dispatch_due(now=T - timedelta(seconds=1))


def test_a_dispatch_as_the_schedule_is_deleted_does_not_fail_the_delete(schedule_factory):
    schedule = schedule_factory(next_fire_at=T)

    with racing_the_delete(Schedule, dispatch_the_tick) as outcome:
        schedule_delete(schedule=schedule)

    # The dispatcher left the schedule being deleted alone (or, on SQLite, came after).
    assert outcome == [0]
    assert not Schedule.objects.exists()
    assert not ScheduleRun.objects.exists()


def test_a_trigger_as_the_schedule_is_deleted_finds_it_gone(schedule_factory):
    schedule = schedule_factory(next_fire_at=T)

    with racing_the_delete(Schedule, lambda: schedule_trigger(schedule=schedule)) as outcome:
        schedule_delete(schedule=schedule)

    [gone] = outcome
    assert isinstance(gone, Schedule.DoesNotExist)
    assert not Schedule.objects.exists()
    assert not ScheduleRun.objects.exists()


@pytest.mark.parametrize("how", ["delete page", "delete_selected action"])
def test_staff_delete_a_schedule_in_the_admin_as_safely(
    client, user_factory, schedule_factory, how
):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    schedule = schedule_factory(next_fire_at=T)

    with racing_the_delete(Schedule, dispatch_the_tick) as outcome:
        response = admin_delete(client, "/admin/schedules/schedule/", schedule.pk, how)

    assert response.status_code == 302
    assert outcome == [0]
    assert not Schedule.objects.exists()
    assert not ScheduleRun.objects.exists()


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("post", "trigger/", None),
        ("post", "pause/", None),
        ("post", "resume/", None),
        ("patch", "", {"name": "renamed"}),
        ("patch", "", {"interval_seconds": 600}),
        ("patch", "", {"enabled": False}),
    ],
)
def test_a_schedule_deleted_after_the_request_found_it_is_not_found(
    auth_client, verified_user, schedule_factory, monkeypatch, method, action, body
):
    schedule = schedule_factory(owner=verified_user, next_fire_at=T)
    found = ScheduleViewSet.get_object

    def found_then_deleted(view) -> Schedule:
        instance = found(view)
        schedule_delete(schedule=Schedule.objects.get(pk=instance.pk))  # Another request's.
        return instance

    monkeypatch.setattr(ScheduleViewSet, "get_object", found_then_deleted)

    send = getattr(auth_client, method)
    response = send(f"/api/schedules/{schedule.pk}/{action}", body, format="json")

    assert response.status_code == 404
