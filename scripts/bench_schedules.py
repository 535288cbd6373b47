"""Users' schedules (issue 17): exactly once across DST, on time, and a dispatcher that scales.

Two parts, on a private PostgreSQL database (dropped and created afresh) and a private Redis,
127.0.0.1 only:

1. In this process, with the real dispatcher (schedules_dispatch_due) and simulated time:
   - **Exactly once across DST**: N schedules (10,000; 100 users) in New York, Berlin and
     Lord Howe, cron and interval, simulated through 48 h around each of the six DST changes
     of 2027 (a window per change, each zone's schedules live in its windows), by 3
     dispatcher threads racing at every step. Fired ticks are compared with a reference
     expansion that shares no code with the service: every local minute of the window,
     matched against each pattern's own predicate, mapped to an instant by the declared
     policy with zoneinfo alone. Duplicates are jobs beyond one per tick; missed and
     unexpected ticks are the differences from the reference.
   - **Preview**: each schedule's `next_runs` at the window's start against what then fired.
   - **Scale**: the dispatcher's time for a tick with 100 schedules due among 1,000, and
     among 100,000 (median of several rounds).
2. On real processes (scripts/stack.py: web, workers, housekeeping, Beat), in real time:
   - 100 schedules due in one minute: fire time -> the job's `started_at`;
   - 10,000 schedules due in one minute: fire time -> the job's run row visible (committed),
     and -> the job published (`enqueued_at`).

    python scripts/bench_schedules.py            # make bench-schedules
    python scripts/bench_schedules.py --quick    # fewer schedules, two windows
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import localredis
from scripts.bench import Figures
from scripts.stack import Stack, recreate_postgres_database

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobsystem_bench_schedules"
DISPATCHERS = 3
# 100 schedules per user, SCHEDULES_PER_USER's default.
USERS = 100
WINDOW = timedelta(hours=48)
LOOKAHEAD = timedelta(seconds=10)  # SCHEDULE_LOOKAHEAD_SECONDS's default.

# Each DST change of 2027 in the three zones, and a window of 48 h around it (UTC).
WINDOWS = [
    ("America/New_York", datetime(2027, 3, 13, 12, tzinfo=UTC)),  # spring forward 03-14
    ("America/New_York", datetime(2027, 11, 6, 12, tzinfo=UTC)),  # fall back 11-07
    ("Europe/Berlin", datetime(2027, 3, 27, 12, tzinfo=UTC)),  # spring forward 03-28
    ("Europe/Berlin", datetime(2027, 10, 30, 12, tzinfo=UTC)),  # fall back 10-31
    ("Australia/Lord_Howe", datetime(2027, 4, 3, 0, tzinfo=UTC)),  # fall back 04-04
    ("Australia/Lord_Howe", datetime(2027, 10, 2, 0, tzinfo=UTC)),  # spring forward 10-03
]


@dataclass(frozen=True)
class Pattern:
    """A timetable as the service takes it, and as the reference matches it."""

    cron: str
    interval_seconds: int | None
    matches: Callable[[datetime], bool]  # A naive local minute; unused for intervals.


# The times that meet the changes: a gap (02:15, 02:30) or a repeated hour (01:30, 01:45) in
# one zone or another, frequent ticks through both (every 15 and 30 minutes in the small
# hours), weekday mornings, and an interval.
PATTERNS = [
    Pattern("30 2 * * *", None, lambda w: (w.hour, w.minute) == (2, 30)),
    Pattern("15 2 * * *", None, lambda w: (w.hour, w.minute) == (2, 15)),
    Pattern("30 1 * * *", None, lambda w: (w.hour, w.minute) == (1, 30)),
    Pattern("45 1 * * *", None, lambda w: (w.hour, w.minute) == (1, 45)),
    Pattern("0 7 * * 1-5", None, lambda w: (w.hour, w.minute) == (7, 0) and w.weekday() < 5),
    Pattern("*/30 0-4 * * *", None, lambda w: w.minute in {0, 30} and w.hour <= 4),
    Pattern("15,45 0-4 * * *", None, lambda w: w.minute in {15, 45} and w.hour <= 4),
    Pattern("", 3 * 3600, lambda w: False),
]


# The reference: brute force over local minutes, sharing nothing with schedules.ticks.


def reference_ticks(pattern: Pattern, zone_name: str, start: datetime, end: datetime) -> list:
    """Every tick in (start, end], by the declared policy, from zoneinfo alone."""
    if pattern.interval_seconds:
        step = pattern.interval_seconds
        first = (int(start.timestamp()) // step + 1) * step
        return [
            datetime.fromtimestamp(second, UTC)
            for second in range(first, int(end.timestamp()) + 1, step)
        ]
    zone = ZoneInfo(zone_name)
    # Local wall-clock minutes from a few hours before to a few after, naive.
    wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    wall -= timedelta(hours=3)
    last = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=3)
    instants = []
    while wall <= last:
        if pattern.matches(wall):
            instant = reference_instant(wall, zone)
            if start < instant <= end and (not instants or instants[-1] != instant):
                instants.append(instant)
        wall += timedelta(minutes=1)
    return instants


def reference_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock minute's instant: the first of two, or the first valid one after a gap."""
    candidates = sorted({wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)})
    real = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == wall]
    if real:
        return real[0]
    # In a gap: step forward a minute at a time, in UTC, from before it to the first instant
    # whose offset is the one after the gap.
    instant = candidates[0]
    after = candidates[-1].astimezone(zone).utcoffset()
    while instant.astimezone(zone).utcoffset() != after:
        instant += timedelta(minutes=1)
    return instant


# Part 1: in this process


def setup_django(database_url: str, redis_url: str) -> None:
    os.environ.update(
        ENV_FILE="/dev/null",
        DEBUG="false",
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-" + "s" * 48),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        DJANGO_SETTINGS_MODULE="job_system.settings",
        # The simulation's jobs never run: 48 h of ticks stay pending, beyond the default cap.
        MAX_ACTIVE_JOBS_PER_USER="1000000",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("schedules").setLevel(logging.WARNING)
    logging.getLogger("jobs").setLevel(logging.WARNING)


def make_users(count: int) -> list:
    from users.models import CustomUser

    users = [
        CustomUser(email=f"bench{n}-{time.time_ns()}@example.com", is_verified=True)
        for n in range(count)
    ]
    return CustomUser.objects.bulk_create(users)


def make_schedules(
    users: list, count: int, zone_of: Callable[[int], str], each: Callable | None = None
) -> list:
    """Disabled schedules of every pattern in turn; `each(n, schedule)` may change them."""
    from schedules.models import Schedule

    schedules = []
    for n in range(count):
        pattern = PATTERNS[n % len(PATTERNS)]
        schedule = Schedule(
            owner=users[n % len(users)],
            name=f"bench {n}",
            cron=pattern.cron,
            interval_seconds=pattern.interval_seconds,
            time_zone=zone_of(n),
            overlap_policy="allow",
            enabled=False,
            # As the API stores them, validated with the handler's defaults: echo reads `data`,
            # and a job without it failed and started again a second or so later.
            parameters={"message": "tick", "data": None},
        )
        if each:
            each(n, schedule)
        schedules.append(schedule)
    return Schedule.objects.bulk_create(schedules, batch_size=2000)


def dispatch_racing(now: datetime) -> None:
    """Run the dispatcher in 3 threads at once, each on its own connection."""
    from django.db import connection

    from schedules.dispatch import schedules_dispatch_due

    barrier = threading.Barrier(DISPATCHERS)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            barrier.wait()
            schedules_dispatch_due(now=now)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body) for _ in range(DISPATCHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def simulate_window(zone: str, start: datetime, schedules: list, step_rng) -> dict:
    """Simulate 48 h for the zone's schedules; compare with the reference."""
    from django.db.models import Min

    from jobs.models import Job
    from schedules.models import Schedule, ScheduleRun
    from schedules.services import first_tick

    mine = [s for s in schedules if s.time_zone == zone]
    ids = [s.pk for s in mine]
    Schedule.objects.filter(enabled=True).update(enabled=False)
    for schedule in mine:
        schedule.enabled = True
        schedule.next_fire_at = first_tick(schedule, now=start)
    Schedule.objects.bulk_update(mine, ["enabled", "next_fire_at"], batch_size=2000)
    end = start + WINDOW
    previews = {s.pk: s.next_runs(10) for s in mine}
    orphans_before = Job.objects.filter(schedule_run__isnull=True).count()
    steps = 0
    now = start
    while True:
        due = Schedule.objects.filter(pk__in=ids, enabled=True).aggregate(Min("next_fire_at"))
        next_due = due["next_fire_at__min"]
        if next_due is None or next_due > end:
            break
        # Reach the next tick as Beat would, somewhere within the look-ahead before it.
        now = max(now, next_due - LOOKAHEAD * step_rng())
        dispatch_racing(now)
        steps += 1
    runs = ScheduleRun.objects.filter(schedule_id__in=ids, fire_time__gt=start, fire_time__lte=end)
    fired: dict = {}
    for schedule_id, fire_time in runs.values_list("schedule_id", "fire_time"):
        fired.setdefault(schedule_id, []).append(fire_time)
    missed = unexpected = preview_equal = preview_total = expected_total = 0
    for schedule in mine:
        pattern = next(
            p
            for p in PATTERNS
            if (p.cron, p.interval_seconds) == (schedule.cron, schedule.interval_seconds)
        )
        expected = reference_ticks(pattern, zone, start, end)
        got = sorted(fired.get(schedule.pk, []))
        expected_total += len(expected)
        missed += len(set(expected) - set(got))
        unexpected += len(set(got) - set(expected))
        shown = [tick for tick in previews[schedule.pk] if tick <= end]
        preview_total += len(shown)
        preview_equal += sum(1 for a, b in zip(shown, got, strict=False) if a == b)
    runs_with_jobs = runs.filter(job__isnull=False).count()
    per_tick = Counter(runs.values_list("schedule_id", "fire_time"))
    # A second job for a tick would have no run of its own (the run is unique per tick).
    orphans = Job.objects.filter(schedule_run__isnull=True).count() - orphans_before
    return {
        "expected": expected_total,
        "fired": runs_with_jobs,
        "duplicates": orphans + sum(n - 1 for n in per_tick.values()),
        "missed": missed,
        "unexpected": unexpected,
        "preview_equal": preview_equal,
        "preview_total": preview_total,
        "steps": steps,
    }


def measure_exactly_once(figures: Figures, count: int, windows: list) -> None:
    import random

    rng = random.Random(17)  # noqa: S311 - a simulation, not crypto
    users = make_users(USERS)
    zones = sorted({zone for zone, _ in windows})
    # Every pattern in every zone: the zone changes once per round of patterns.
    schedules = make_schedules(users, count, lambda n: zones[n // len(PATTERNS) % len(zones)])
    totals: Counter = Counter()
    started = time.monotonic()
    for zone, start in windows:
        result = simulate_window(zone, start, schedules, rng.random)
        print(f"  {zone} from {start:%Y-%m-%d %H:%M}Z: {result}", flush=True)
        totals.update(result)
    figures.add("dst_windows_simulated", len(windows), f"x 48 h ({count} schedules)")
    figures.add("dst_ticks_expected", totals["expected"], "ticks")
    figures.add("dst_ticks_fired", totals["fired"], "ticks")
    figures.add("dst_duplicate_fires", totals["duplicates"], "(target 0)")
    figures.add("dst_missed_fires", totals["missed"], "(target 0)")
    figures.add("dst_unexpected_fires", totals["unexpected"], "(target 0)")
    figures.add(
        "preview_equal_to_fired",
        100.0 * totals["preview_equal"] / max(1, totals["preview_total"]),
        f"% of {totals['preview_total']} previewed ticks (target 100)",
    )
    figures.add("dst_simulation_seconds", time.monotonic() - started, "s")


def measure_scale(figures: Figures, rounds: int) -> None:
    """The dispatcher's time for 100 due schedules among 1,000 and among 100,000."""
    from django.db import connection

    from jobs.models import Job
    from schedules.dispatch import schedules_dispatch_due
    from schedules.models import Schedule, ScheduleRun

    # Midnight: a daily interval ticks on multiples of a day since the epoch.
    due_at = datetime(2029, 6, 1, tzinfo=UTC)
    results = {}
    for total in (1_000, 100_000):
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE jobs_job, schedules_schedule, schedules_schedulerun CASCADE")
        users = make_users(USERS)

        def daily(n: int, schedule) -> None:
            # 100 due at due_at; the others on later days, all in the index.
            schedule.enabled = True
            schedule.cron, schedule.interval_seconds = "", 86400
            schedule.next_fire_at = due_at + timedelta(days=0 if n < 100 else 1 + n % 300)

        schedules = make_schedules(users, total, lambda n: "UTC", daily)
        due = [s.pk for s in schedules[:100]]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        timings = []
        for _ in range(rounds):
            Schedule.objects.filter(pk__in=due).update(next_fire_at=due_at, latest_job=None)
            ScheduleRun.objects.all().delete()
            Job.objects.all().delete()
            began = time.perf_counter()
            recorded = schedules_dispatch_due(now=due_at)
            timings.append(time.perf_counter() - began)
            assert recorded == 100, recorded
        results[total] = statistics.median(timings)
        figures.add(f"dispatch_tick_100_due_of_{total}", results[total] * 1000, "ms (median)")
    figures.add(
        "dispatch_tick_ratio_100k_vs_1k", results[100_000] / results[1_000], "x (target <= 2)"
    )


# Part 2: real processes


def wait_for_run_rows(count: int, fire_time: datetime, deadline: float) -> dict:
    """Poll for the runs of a tick as they commit; return the time each became visible."""
    from schedules.models import ScheduleRun

    seen: dict = {}
    newest = 0
    # By the tick's time, not by the schedules' ids: 20 queries a second, each with 10,000 ids,
    # took the CPU the dispatcher it measured needed.
    runs = ScheduleRun.objects.filter(fire_time=fire_time)
    while len(seen) < count and time.time() < deadline:
        now = datetime.now(UTC)
        # One dispatcher inserts them in order, so the newest id seen is a watermark.
        for pk in runs.filter(pk__gt=newest).values_list("pk", flat=True):
            seen[pk] = now
            newest = max(newest, pk)
        time.sleep(0.05)
    return seen


def next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + timedelta(minutes=1)


def live_schedules(count: int, users: list, *, lead: timedelta) -> tuple[list, datetime]:
    """`count` daily schedules that all fire at the first minute at least `lead` from now."""
    from schedules.models import Schedule

    ids = [s.pk for s in make_schedules(users, count, lambda n: "UTC")]
    fire_time = next_minute(datetime.now(UTC) + lead)
    Schedule.objects.filter(pk__in=ids).update(
        enabled=True,
        cron=f"{fire_time.minute} {fire_time.hour} * * *",
        interval_seconds=None,
        next_fire_at=fire_time,
    )
    return ids, fire_time


def measure_live(figures: Figures, database_url: str, big: int, workdir: Path) -> None:
    from django.db import connections

    from jobs.models import Job
    from schedules.models import Schedule, ScheduleRun

    connections.close_all()
    recreate_postgres_database(database_url)
    with Stack(workdir / "stack", database_url=database_url, web_workers=1, web_threads=8) as stack:
        del stack  # Its processes do the work; this process reads the database.
        users = make_users(USERS)

        # 100 schedules due in the same minute: fire time -> started_at.
        ids, fire_time = live_schedules(100, users, lead=timedelta(seconds=20))
        deadline = time.time() + (fire_time - datetime.now(UTC)).total_seconds() + 60
        while time.time() < deadline:
            started = Job.objects.filter(
                schedule_run__schedule_id__in=ids, started_at__isnull=False
            ).count()
            if started == 100:
                break
            time.sleep(0.5)
        lateness = [
            (started - fire).total_seconds() * 1000
            for started, fire in Job.objects.filter(
                schedule_run__schedule_id__in=ids, started_at__isnull=False
            ).values_list("started_at", "schedule_run__fire_time")
        ]
        figures.add("live_100_started", len(lateness), "of 100 jobs")
        figures.percentiles("live_100_fire_to_started", lateness, "ms")
        figures.add("live_100_started_early", sum(1 for late in lateness if late < 0), "(target 0)")
        Schedule.objects.filter(pk__in=ids).update(enabled=False)

        # `big` schedules due in the same minute: fire time -> run committed, -> published.
        ids, fire_time = live_schedules(big, users, lead=timedelta(seconds=20))
        seen = wait_for_run_rows(big, fire_time, deadline=fire_time.timestamp() + 180)
        committed = [(at - fire_time).total_seconds() * 1000 for at in seen.values()]
        figures.add("live_big_schedules", big, "due in one minute")
        figures.add("live_big_runs_committed", len(committed), f"of {big}")
        figures.percentiles("live_big_fire_to_committed", committed, "ms")
        time.sleep(10)
        published = [
            (enqueued - fire_time).total_seconds() * 1000
            for enqueued in ScheduleRun.objects.filter(
                schedule_id__in=ids, job__enqueued_at__isnull=False
            ).values_list("job__enqueued_at", flat=True)
        ]
        figures.add("live_big_published_10s_after", len(published), f"of {big}")
        figures.percentiles("live_big_fire_to_published", published, "ms")
        Schedule.objects.filter(pk__in=ids).update(enabled=False)
        connections.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--schedules", type=int, default=10_000, help="for the simulation")
    parser.add_argument("--live-schedules", type=int, default=10_000, help="due in one minute")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 schedules, two windows, 2,000 live"
    )
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    args = parser.parse_args(argv)
    count = 2_000 if args.quick else args.schedules
    if args.quick:
        args.live_schedules = 2_000
    windows = [WINDOWS[0], WINDOWS[5]] if args.quick else WINDOWS
    figures = Figures()
    workdir = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    recreate_postgres_database(args.database_url)
    redis, redis_url = localredis.start_redis(None, workdir / "redis")
    try:
        setup_django(args.database_url, redis_url)
        if not args.skip_simulation:
            measure_exactly_once(figures, count, windows)
            measure_scale(figures, rounds=3 if args.quick else 7)
        if not args.skip_live:
            measure_live(figures, args.database_url, args.live_schedules, workdir)
    finally:
        localredis.stop_redis(redis)
        shutil.rmtree(workdir, ignore_errors=True)
    failed = (
        figures.values.get("dst_duplicate_fires", {}).get("value")
        or figures.values.get("dst_missed_fires", {}).get("value")
        or figures.values.get("dst_unexpected_fires", {}).get("value")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
