"""The dispatcher: each tick one job, on time, through the catch-up and overlap policies."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.services import active_cap
from jobs.tests.concurrency import run_together
from schedules.dispatch import schedules_dispatch_due
from schedules.models import Schedule, ScheduleRun

T = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # A Monday, far enough ahead to be in the future.
MINUTE = timedelta(minutes=1)


def runs_of(schedule) -> list[tuple[datetime, str, str]]:
    runs = ScheduleRun.objects.filter(schedule=schedule).order_by("fire_time")
    return [(run.fire_time, run.kind, run.skipped) for run in runs]


def test_a_due_tick_becomes_one_job_scheduled_for_its_fire_time(schedule_factory):
    schedule = schedule_factory(next_fire_at=T, priority=7, parameters={"message": "hi"})

    schedules_dispatch_due(now=T - timedelta(seconds=5))
    schedules_dispatch_due(now=T - timedelta(seconds=4))

    [run] = ScheduleRun.objects.filter(schedule=schedule)
    job = run.job
    assert (run.fire_time, run.kind) == (T, ScheduleRun.Kind.TICK)
    assert (job.owner, job.name, job.priority, job.parameters) == (
        schedule.owner, schedule.name, 7, {"message": "hi"}
    )  # fmt: skip
    # A scheduled job: the jobs' dispatcher publishes it with an ETA, and no claim starts it
    # before run_after.
    assert job.scheduled_time == job.run_after == T
    assert job.status == Job.Status.PENDING
    schedule.refresh_from_db()
    assert (schedule.next_fire_at, schedule.latest_job) == (T + MINUTE, job)


def test_ticks_beyond_the_look_ahead_wait(schedule_factory, settings):
    schedule = schedule_factory(next_fire_at=T)

    assert (
        schedules_dispatch_due(now=T - timedelta(seconds=settings.SCHEDULE_LOOKAHEAD_SECONDS + 1))
        == 0
    )
    assert not ScheduleRun.objects.filter(schedule=schedule).exists()


def test_paused_schedules_do_not_fire(schedule_factory):
    schedule_factory(next_fire_at=T, enabled=False)

    assert schedules_dispatch_due(now=T) == 0
    assert not Job.objects.exists()


def test_a_tick_that_fired_before_is_not_fired_again(schedule_factory):
    # As after a crash between creating the tick's job and advancing the schedule, had they
    # been two transactions, or an edit that moved next_fire_at back over it.
    schedule = schedule_factory(next_fire_at=T, overlap_policy="allow")
    schedules_dispatch_due(now=T)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=T)

    schedules_dispatch_due(now=T)

    assert ScheduleRun.objects.filter(schedule=schedule, fire_time=T).count() == 1
    assert Job.objects.filter(schedule_run__schedule=schedule).count() == 1
    assert Job.objects.count() == 1  # The second job was rolled back with its run.
    schedule.refresh_from_db()
    assert schedule.next_fire_at == T + MINUTE


def test_an_ended_schedule_has_no_next_tick(schedule_factory):
    schedule = schedule_factory(next_fire_at=T, end_at=T + timedelta(seconds=30))

    schedules_dispatch_due(now=T)

    schedule.refresh_from_db()
    assert schedule.next_fire_at is None
    assert [fire for fire, _, _ in runs_of(schedule)] == [T]


@pytest.mark.django_db(transaction=True)
def test_dispatchers_racing_fire_every_tick_exactly_once(schedule_factory):
    schedules = [schedule_factory(next_fire_at=T, overlap_policy="allow") for _ in range(60)]

    for step in range(3):
        run_together(3, lambda step=step: schedules_dispatch_due(now=T + step * MINUTE))

    for schedule in schedules:
        assert [fire for fire, _, _ in runs_of(schedule)] == [T, T + MINUTE, T + 2 * MINUTE]
    assert Job.objects.count() == 180


class TestCatchUp:
    """Ticks missed while the service was down (next_fire_at older than the grace)."""

    def test_skip_runs_none_of_them_and_moves_on(self, schedule_factory):
        schedule = schedule_factory(next_fire_at=T, catchup_policy="skip")

        schedules_dispatch_due(now=T + 30 * MINUTE + timedelta(seconds=5))

        assert runs_of(schedule) == []
        schedule.refresh_from_db()
        assert schedule.next_fire_at == T + 31 * MINUTE

    def test_latest_runs_the_latest_once_with_its_own_fire_time(self, schedule_factory):
        schedule = schedule_factory(next_fire_at=T, catchup_policy="latest")

        schedules_dispatch_due(now=T + 30 * MINUTE + timedelta(seconds=5))

        assert runs_of(schedule) == [(T + 30 * MINUTE, "catch_up", "")]
        job = ScheduleRun.objects.get(schedule=schedule).job
        assert job.scheduled_time == T + 30 * MINUTE
        assert job.run_after >= timezone.now() - MINUTE  # It starts at once.

    def test_all_runs_those_within_the_window_up_to_the_limit(self, schedule_factory, settings):
        settings.SCHEDULE_CATCHUP_MAX_RUNS = 4
        windowed = schedule_factory(
            next_fire_at=T, catchup_policy="all", catchup_window_seconds=180, overlap_policy="allow"
        )
        capped = schedule_factory(
            next_fire_at=T,
            catchup_policy="all",
            catchup_window_seconds=3600,
            overlap_policy="allow",
        )

        schedules_dispatch_due(now=T + 30 * MINUTE)

        assert [fire for fire, _, _ in runs_of(windowed)] == [
            T + m * MINUTE for m in (27, 28, 29, 30)
        ]
        assert [fire for fire, _, _ in runs_of(capped)] == [
            T + m * MINUTE for m in (27, 28, 29, 30)
        ]
        settings.SCHEDULE_CATCHUP_MAX_RUNS = 10
        schedule = schedule_factory(
            next_fire_at=T, catchup_policy="all", catchup_window_seconds=180, overlap_policy="allow"
        )
        schedules_dispatch_due(now=T + 30 * MINUTE)
        assert [fire for fire, _, _ in runs_of(schedule)] == [
            T + m * MINUTE for m in (27, 28, 29, 30)
        ]

    def test_a_tick_late_within_the_grace_runs_as_a_tick(self, schedule_factory):
        schedule = schedule_factory(next_fire_at=T, catchup_policy="skip")

        schedules_dispatch_due(now=T + timedelta(seconds=20))

        assert runs_of(schedule) == [(T, "tick", "")]


class TestOverlap:
    """A tick that comes while the schedule's latest job is pending or running."""

    def busy(self, schedule_factory, policy: str):
        schedule = schedule_factory(next_fire_at=T, overlap_policy=policy)
        schedules_dispatch_due(now=T)
        Job.objects.update(status=Job.Status.IN_PROGRESS, lease_expires_at=T + MINUTE)
        return schedule

    def test_skip_records_the_tick_as_skipped(self, schedule_factory):
        schedule = self.busy(schedule_factory, "skip")

        schedules_dispatch_due(now=T + MINUTE)

        assert runs_of(schedule) == [(T, "tick", ""), (T + MINUTE, "tick", "overlap")]
        assert Job.objects.count() == 1

    def test_it_is_decided_at_the_tick_not_ahead_of_it(self, schedule_factory):
        schedule = self.busy(schedule_factory, "skip")
        ahead = T + MINUTE - timedelta(seconds=5)  # Within the look-ahead of the next tick.

        schedules_dispatch_due(now=ahead)
        assert runs_of(schedule) == [(T, "tick", "")]  # Busy now, but maybe not at the tick.

        Job.objects.update(status=Job.Status.COMPLETED, lease_expires_at=None)
        schedules_dispatch_due(now=ahead + timedelta(seconds=1))

        assert runs_of(schedule) == [(T, "tick", ""), (T + MINUTE, "tick", "")]
        second = Job.objects.filter(status=Job.Status.PENDING).get()
        assert second.scheduled_time == T + MINUTE  # Still created ahead, and on time.

    def test_a_busy_schedule_waits_without_holding_up_the_others(self, schedule_factory, settings):
        settings.SCHEDULE_DISPATCH_BATCH_SIZE = 1
        busy = self.busy(schedule_factory, "skip")
        idle = schedule_factory(next_fire_at=T + MINUTE, overlap_policy="skip")

        # The busy one is due first and is not taken: the batch of one is the idle one.
        schedules_dispatch_due(now=T + MINUTE - timedelta(seconds=5))

        assert runs_of(busy) == [(T, "tick", "")]
        assert runs_of(idle) == [(T + MINUTE, "tick", "")]

    def test_ticks_within_the_look_ahead_after_a_new_job_are_put_off(self, schedule_factory):
        schedule = schedule_factory(next_fire_at=T, cron="", interval_seconds=4)

        schedules_dispatch_due(now=T)  # Ticks T, T+4 s and T+8 s are within the look-ahead.

        assert runs_of(schedule) == [(T, "tick", "")]
        schedule.refresh_from_db()
        assert schedule.next_fire_at == T + timedelta(seconds=4)

    def test_allow_runs_it_anyway(self, schedule_factory):
        schedule = self.busy(schedule_factory, "allow")

        schedules_dispatch_due(now=T + MINUTE)

        assert runs_of(schedule) == [(T, "tick", ""), (T + MINUTE, "tick", "")]
        assert Job.objects.count() == 2

    def test_buffer_one_keeps_one_tick_for_when_the_run_finishes(self, schedule_factory):
        schedule = self.busy(schedule_factory, "buffer_one")

        schedules_dispatch_due(now=T + MINUTE)
        schedules_dispatch_due(now=T + 2 * MINUTE)
        assert runs_of(schedule) == [(T, "tick", ""), (T + 2 * MINUTE, "tick", "overlap")]

        Job.objects.update(status=Job.Status.COMPLETED, lease_expires_at=None)
        schedules_dispatch_due(now=T + 2 * MINUTE)

        assert runs_of(schedule) == [
            (T, "tick", ""), (T + MINUTE, "buffered", ""), (T + 2 * MINUTE, "tick", "overlap")
        ]  # fmt: skip
        schedule.refresh_from_db()
        assert schedule.buffered_fire_at is None
        assert Job.objects.filter(status=Job.Status.PENDING).count() == 1


def test_jitter_is_fixed_per_tick_and_stays_short_of_the_next(schedule_factory):
    schedule = schedule_factory(next_fire_at=T, jitter_seconds=3600, overlap_policy="allow")
    other = schedule_factory(next_fire_at=T, jitter_seconds=3600, overlap_policy="allow")

    schedules_dispatch_due(now=T)
    first = {run.schedule_id: run.job.scheduled_time for run in ScheduleRun.objects.all()}
    ScheduleRun.objects.all().delete()
    Schedule.objects.update(next_fire_at=T)
    schedules_dispatch_due(now=T)
    again = {run.schedule_id: run.job.scheduled_time for run in ScheduleRun.objects.all()}

    assert first == again
    assert first[schedule.pk] != first[other.pk]
    assert all(T <= start < T + MINUTE for start in first.values())


def test_the_preview_is_what_fires(schedule_factory):
    # Every 15 minutes in New York across the autumn change, with jitter.
    start = datetime(2026, 11, 1, 4, 10, tzinfo=UTC)
    schedule = schedule_factory(
        interval_seconds=None,
        cron="*/15 * * * *",
        time_zone="America/New_York",
        jitter_seconds=120,
        overlap_policy="allow",
    )
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=start + timedelta(minutes=5))
    schedule.refresh_from_db()
    preview = schedule.next_runs(10)

    now = start
    while ScheduleRun.objects.count() < 10:
        schedules_dispatch_due(now=now)
        now += timedelta(seconds=30)

    assert [run.fire_time for run in ScheduleRun.objects.order_by("fire_time")[:10]] == preview


def test_a_full_active_job_cap_skips_the_tick(schedule_factory, settings, own_cache_keys):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    schedule = schedule_factory(next_fire_at=T, overlap_policy="allow")
    Job.objects.create(owner=schedule.owner, name="already there")

    schedules_dispatch_due(now=T)

    assert runs_of(schedule) == [(T, "tick", "active_job_cap")]


class TestManyOwnersInOneBatch:
    """A batch creates the ticks of all its owners together, each within its own cap."""

    def test_each_tick_is_one_job_of_its_schedules_owner(
        self, schedule_factory, django_assert_max_num_queries
    ):
        schedules = [schedule_factory(next_fire_at=T) for _ in range(30)]  # 30 owners

        # Not a dozen per owner: the owners' jobs and their runs are one INSERT each.
        with django_assert_max_num_queries(20):
            schedules_dispatch_due(now=T)

        for schedule in schedules:
            [run] = ScheduleRun.objects.filter(schedule=schedule).select_related("job")
            assert (run.fire_time, run.skipped, run.job.owner_id) == (T, "", schedule.owner_id)
            assert run.job.scheduled_time == T
            schedule.refresh_from_db()
            assert (schedule.next_fire_at, schedule.latest_job_id) == (T + MINUTE, run.job_id)
        assert Job.objects.count() == 30

    def test_a_full_cap_skips_only_its_owners_ticks(
        self, schedule_factory, settings, own_cache_keys
    ):
        settings.MAX_ACTIVE_JOBS_PER_USER = 1
        full = schedule_factory(next_fire_at=T)
        Job.objects.create(owner=full.owner, name="already there")
        others = [schedule_factory(next_fire_at=T) for _ in range(3)]

        schedules_dispatch_due(now=T)

        assert runs_of(full) == [(T, "tick", "active_job_cap")]
        for schedule in others:
            assert runs_of(schedule) == [(T, "tick", "")]
        assert Job.objects.filter(owner=full.owner).count() == 1

    def test_refused_ticks_leave_room_under_the_cap(
        self, schedule_factory, settings, own_cache_keys
    ):
        settings.MAX_ACTIVE_JOBS_PER_USER = 2
        first = schedule_factory(next_fire_at=T, overlap_policy="allow")
        same_owner = [schedule_factory(next_fire_at=T, owner=first.owner) for _ in range(2)]

        schedules_dispatch_due(now=T)  # Three ticks of one owner: more than the cap.
        refused = ScheduleRun.objects.filter(skipped="active_job_cap").count()
        Schedule.objects.filter(pk__in=[s.pk for s in same_owner]).update(enabled=False)
        schedules_dispatch_due(now=T + MINUTE)

        assert refused == 3
        # The refused three were taken off the count, so the next tick fits.
        assert runs_of(first)[-1] == (T + MINUTE, "tick", "")

    def test_a_batch_rolled_back_for_a_tick_that_fired_before_leaves_the_counts_as_they_were(
        self, schedule_factory, settings, own_cache_keys, monkeypatch
    ):
        monkeypatch.setattr(active_cap, "ACTIVE_COUNT_SECONDS", 60)  # Not taken afresh.
        settings.MAX_ACTIVE_JOBS_PER_USER = 3
        fired_before = schedule_factory(next_fire_at=T, overlap_policy="allow")
        schedules_dispatch_due(now=T)  # One active job counted.
        Schedule.objects.filter(pk=fired_before.pk).update(next_fire_at=T)
        other = schedule_factory(next_fire_at=T, owner=fired_before.owner)

        # Both counted (3), then rolled back with the runs' INSERT; the other tick again (2).
        schedules_dispatch_due(now=T)

        assert runs_of(other) == [(T, "tick", "")]
        assert Job.objects.filter(owner=other.owner).count() == 2

    def test_a_tick_that_fired_before_does_not_stop_the_others(self, schedule_factory):
        fired_before = schedule_factory(next_fire_at=T, overlap_policy="allow")
        other = schedule_factory(next_fire_at=T, overlap_policy="allow")
        schedules_dispatch_due(now=T)
        # Moved back over a tick it fired, in the batch of another owner's next tick.
        Schedule.objects.filter(pk=fired_before.pk).update(next_fire_at=T)

        schedules_dispatch_due(now=T + MINUTE)

        assert [fire for fire, _, _ in runs_of(fired_before)] == [T, T + MINUTE]
        assert [fire for fire, _, _ in runs_of(other)] == [T, T + MINUTE]
        assert Job.objects.count() == 4


def test_a_schedule_whose_job_type_is_gone_records_its_ticks_and_stops_no_other(
    schedule_factory,
):
    # Its job type taken out of the service since it was made: before, every dispatch raised
    # on it, and the other schedules of its batch never fired.
    gone = schedule_factory(next_fire_at=T)
    Schedule.objects.filter(pk=gone.pk).update(job_type="retired")
    other = schedule_factory(next_fire_at=T)

    assert schedules_dispatch_due(now=T) == 2

    assert runs_of(gone) == [(T, "tick", "unknown_job_type")]
    assert [run.job.status for run in ScheduleRun.objects.filter(schedule=other)] == ["pending"]
    gone.refresh_from_db()
    assert (gone.next_fire_at, gone.enabled) == (T + MINUTE, True)
