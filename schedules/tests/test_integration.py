"""A schedule's life against real processes: Beat, the housekeeping worker, a job worker."""

import time
from datetime import timedelta

import pytest

from jobs.models import Job
from jobs.tests.live import wait_for
from schedules.models import ScheduleRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCHEDULES = "/api/schedules/"
INTERVAL = 2


def finished_runs(schedule_id: str) -> list[ScheduleRun]:
    runs = ScheduleRun.objects.filter(
        schedule_id=schedule_id, job__status=Job.Status.COMPLETED
    ).select_related("job")
    return list(runs.order_by("fire_time"))


def test_a_schedule_fires_on_time_pauses_resumes_and_runs_on_request(
    live_worker, live_beat, auth_client, settings
):
    # The web side is this process; the dispatcher, in the housekeeping worker, keeps the
    # interval it is given.
    settings.SCHEDULE_MIN_INTERVAL_SECONDS = 1
    created = auth_client.post(
        SCHEDULES,
        {
            "name": "heartbeat",
            "interval_seconds": INTERVAL,
            "overlap_policy": "allow",
            "job": {"job_type": "echo", "parameters": {"message": "tick"}},
        },
        format="json",
    )
    assert created.status_code == 201, created.data
    url = f"{SCHEDULES}{created.data['id']}/"

    runs = wait_for(
        lambda: (found := finished_runs(created.data["id"]))[2:] and found,
        timeout=40,
        message="the schedule's first three ticks did not run",
    )

    step = timedelta(seconds=INTERVAL)
    assert [run.fire_time - runs[0].fire_time for run in runs[:3]] == [0 * step, step, 2 * step]
    for run in runs:
        assert run.kind == ScheduleRun.Kind.TICK
        assert run.job.started_at >= run.fire_time  # Never early.
    listed = auth_client.get(f"/api/jobs/?schedule={created.data['id']}&page_size=100")
    assert {str(run.job_id) for run in runs} <= {job["id"] for job in listed.data["results"]}
    shown = auth_client.get(url).data["last_runs"]
    assert shown[0]["fire_time"] > shown[-1]["fire_time"]

    assert auth_client.post(f"{url}pause/").data["enabled"] is False
    # Ticks whose jobs were made ahead still run; after them, nothing.
    time.sleep(1)
    paused_count = ScheduleRun.objects.filter(schedule_id=created.data["id"]).count()
    time.sleep(3 * INTERVAL)
    assert ScheduleRun.objects.filter(schedule_id=created.data["id"]).count() == paused_count

    resumed = auth_client.post(f"{url}resume/").data
    wait_for(
        lambda: ScheduleRun.objects.filter(
            schedule_id=created.data["id"], fire_time__gte=resumed["next_fire_at"]
        ).exists(),
        timeout=20,
        message="the resumed schedule did not fire",
    )

    triggered = auth_client.post(f"{url}trigger/")
    assert triggered.status_code == 201, triggered.data
    wait_for(
        lambda: Job.objects.filter(pk=triggered.data["job"], status=Job.Status.COMPLETED).exists(),
        timeout=20,
        message="the triggered run did not complete",
    )

    assert auth_client.delete(url).status_code == 204
