"""The declared DST policy, checked through the real cron library in three zones.

New York and Berlin move an hour; Lord Howe moves 30 minutes. Each case names local
wall-clock times, so a reader can check it against a calendar.
"""

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from schedules.ticks import InvalidCron, Timing, check_cron

NEW_YORK, BERLIN, LORD_HOWE = "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)


def wall_clock(zone: str, ticks: list[datetime]) -> list[str]:
    return [tick.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for tick in ticks]


@pytest.mark.parametrize(
    ("zone", "cron", "day_before", "expected"),
    [
        # 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 does not exist and runs at 03:00.
        (
            NEW_YORK,
            "30 2 * * *",
            (2026, 3, 7),
            ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"],
        ),
        # 2026-03-29 02:00 CET -> 03:00 CEST.
        (
            BERLIN,
            "30 2 * * *",
            (2026, 3, 28),
            ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"],
        ),
        # 2026-10-04 02:00 -> 02:30 (+10:30 -> +11:00): 02:15 does not exist and runs at 02:30.
        (
            LORD_HOWE,
            "15 2 * * *",
            (2026, 10, 3),
            ["10-03 02:15 +1030", "10-04 02:30 +11", "10-05 02:15 +11"],
        ),
    ],
)
def test_a_local_time_that_does_not_exist_runs_once_at_the_next_valid_instant(
    zone, cron, day_before, expected
):
    ticks = Timing(cron=cron, time_zone=zone).next_ticks(local(zone, *day_before), 3)

    assert wall_clock(zone, ticks) == expected


@pytest.mark.parametrize(
    ("zone", "cron", "day_before", "expected"),
    [
        # 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 comes twice and runs at the first.
        (
            NEW_YORK,
            "30 1 * * *",
            (2026, 10, 31),
            ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"],
        ),
        # 2026-10-25 03:00 CEST -> 02:00 CET.
        (
            BERLIN,
            "30 2 * * *",
            (2026, 10, 24),
            ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"],
        ),
        # 2026-04-05 02:00 (+11) -> 01:30 (+10:30): 01:45 comes twice.
        (
            LORD_HOWE,
            "45 1 * * *",
            (2026, 4, 4),
            ["04-04 01:45 +11", "04-05 01:45 +11", "04-06 01:45 +1030"],
        ),
    ],
)
def test_a_local_time_that_exists_twice_runs_once_at_the_first(zone, cron, day_before, expected):
    ticks = Timing(cron=cron, time_zone=zone).next_ticks(local(zone, *day_before), 3)

    assert wall_clock(zone, ticks) == expected


@pytest.mark.parametrize(
    ("zone", "gap_end"),
    [
        (NEW_YORK, (2026, 3, 8, 3, 0)),
        (BERLIN, (2026, 3, 29, 3, 0)),
        (LORD_HOWE, (2026, 10, 4, 2, 30)),
    ],
)
def test_the_instant_after_a_gap_is_a_tick_of_the_times_in_the_gap(zone, gap_end):
    # The dispatcher goes on from the tick it stored: the gap's own instant, for a time in it.
    timing = Timing(cron="15 2 * * *", time_zone=zone)
    tick = local(zone, *gap_end)

    assert timing.next_ticks(tick, 1, inclusive=True) == [tick]
    assert timing.next_ticks(tick.astimezone(UTC) - timedelta(minutes=1), 1) == [tick]


def test_frequent_cron_ticks_skip_the_repeated_hour_and_merge_in_the_gap():
    timing = Timing(cron="*/30 * * * *", time_zone=NEW_YORK)

    autumn = timing.next_ticks(local(NEW_YORK, 2026, 11, 1, 0, 45), 5)
    spring = timing.next_ticks(local(NEW_YORK, 2026, 3, 8, 0, 45), 4)

    assert wall_clock(NEW_YORK, autumn) == [
        "11-01 01:00 EDT", "11-01 01:30 EDT", "11-01 02:00 EST", "11-01 02:30 EST",
        "11-01 03:00 EST",
    ]  # fmt: skip
    # 02:00 and 02:30 do not exist: both are 03:00, which fires once.
    assert wall_clock(NEW_YORK, spring) == [
        "03-08 01:00 EST", "03-08 01:30 EST", "03-08 03:00 EDT", "03-08 03:30 EDT"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        (NEW_YORK, datetime(2026, 3, 8, 5, 0, tzinfo=UTC)),
        (NEW_YORK, datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),
        (BERLIN, datetime(2026, 3, 29, 0, 0, tzinfo=UTC)),
        (BERLIN, datetime(2026, 10, 25, 0, 0, tzinfo=UTC)),
        (LORD_HOWE, datetime(2026, 10, 3, 15, 0, tzinfo=UTC)),
        (LORD_HOWE, datetime(2026, 4, 4, 14, 0, tzinfo=UTC)),
    ],
)
def test_interval_ticks_ignore_dst(zone, start):
    ticks = Timing(interval_seconds=1800, time_zone=zone).next_ticks(start, 8)

    assert {(later - earlier).total_seconds() for earlier, later in pairwise(ticks)} == {1800}


@pytest.mark.parametrize("zone", [NEW_YORK, BERLIN, LORD_HOWE])
@pytest.mark.parametrize("cron", ["*/15 * * * *", "30 1 * * *", "30 2 * * *", "0 * * * *"])
def test_backwards_ticks_are_the_forward_ones_reversed_across_both_changes(zone, cron):
    timing = Timing(cron=cron, time_zone=zone)
    for start in (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)):
        forward = timing.next_ticks(start, 400)
        backward = list(islice(timing.ticks_back_from(forward[-1]), len(forward)))

        assert backward == forward[::-1]


def test_interval_ticks_count_from_start_at_and_stop_at_end_at():
    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    timing = Timing(
        interval_seconds=600, start_at=start, end_at=datetime(2026, 1, 1, 0, 30, 7, tzinfo=UTC)
    )

    assert timing.next_ticks(datetime(2025, 1, 1, tzinfo=UTC), 10) == [
        datetime(2026, 1, 1, 0, minute, 7, tzinfo=UTC) for minute in (0, 10, 20, 30)
    ]


def test_a_sparse_expression_is_found_and_one_past_end_at_has_no_ticks():
    # A fifth Monday in February: 2044 has the next one.
    sparse = Timing(cron="0 0 * 2 mon#5")
    ended = Timing(cron="0 0 * 2 mon#5", end_at=datetime(2040, 1, 1, tzinfo=UTC))

    assert sparse.next_ticks(datetime(2026, 1, 1, tzinfo=UTC), 1) == [
        datetime(2044, 2, 29, tzinfo=UTC)
    ]
    assert ended.next_ticks(datetime(2026, 1, 1, tzinfo=UTC), 1) == []


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "* * * * * *", "60 * * * *", "0 0 30 2 *", "0 0 * * 8", "@daily", "*/0 * * * *"],
)
def test_only_five_valid_fields_are_a_cron_expression(expression):
    with pytest.raises(InvalidCron):
        check_cron(expression)


def test_names_and_ranges_are_a_cron_expression():
    check_cron("0 7 * jan-mar MON-FRI")
