"""When a schedule fires: its ticks, from a cron expression or an interval, in its time zone.

A cron expression is matched against the wall-clock time of the schedule's zone, by cronsim,
with naive datetimes (plain calendar arithmetic, no DST handling of its own). The DST policy
is ours, applied here to each wall-clock match:

- a match that does not exist (spring forward) fires at the first instant after the gap;
- a match that exists twice (fall back) fires once, at its first occurrence;
- matches that land on one instant (the gap's, and the one just after it) fire once.

Interval ticks are start_at + k x interval (or multiples of the interval since the Unix epoch),
counted in UTC: DST does not move them.

Every tick is an aware UTC datetime. Each iterator ends at end_at, and a cron expression
that matches nothing for 50 years (cronsim's search limit) has no more ticks.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# More than any zone's DST shift (2 h at most), so that a backwards search that starts this far
# past an instant's wall-clock time meets the first pass of a repeated hour.
MAX_SHIFT = timedelta(hours=3)
ONE_MINUTE = timedelta(minutes=1)


class InvalidCron(ValueError):
    """The cron expression is not five valid fields."""


def check_cron(expression: str) -> None:
    """Raise InvalidCron unless the expression is 5 fields cronsim accepts."""
    if len(expression.split()) != 5:
        raise InvalidCron(
            "Give 5 fields: minute, hour, day of month, month, day of week (`0 7 * * 1-5`)."
        )
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise InvalidCron(f"{exc}.") from None


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's ticks; a Schedule gives its own (Schedule.timing)."""

    cron: str = ""
    interval_seconds: int | None = None
    time_zone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None

    def ticks_from(self, instant: datetime, *, inclusive: bool = False) -> Iterator[datetime]:
        """Ticks after `instant` (or at it, if inclusive), oldest first."""
        if self.start_at and instant < self.start_at:
            instant, inclusive = self.start_at, True
        ticks = self._interval_from(instant) if self.interval_seconds else self._cron_from(instant)
        for tick in ticks:
            if self.end_at and tick > self.end_at:
                return
            if tick > instant or (inclusive and tick == instant):
                yield tick

    def ticks_back_from(self, instant: datetime) -> Iterator[datetime]:
        """Ticks at or before `instant`, newest first, down to start_at."""
        if self.end_at and instant > self.end_at:
            instant = self.end_at
        if self.interval_seconds:
            ticks = self._interval_back_from(instant)
        else:
            ticks = self._cron_back_from(instant)
        for tick in ticks:
            if self.start_at and tick < self.start_at:
                return
            if tick <= instant:
                yield tick

    def next_ticks(self, instant: datetime, count: int, *, inclusive: bool = False) -> list:
        ticks = self.ticks_from(instant, inclusive=inclusive)
        return [tick for _, tick in zip(range(count), ticks, strict=False)]

    def _anchor(self) -> datetime:
        return self.start_at or EPOCH

    def _interval_from(self, instant: datetime) -> Iterator[datetime]:
        step = timedelta(seconds=self.interval_seconds)
        count = max(0, (instant - self._anchor()) // step)
        tick = self._anchor() + count * step
        while True:
            yield tick
            tick += step

    def _interval_back_from(self, instant: datetime) -> Iterator[datetime]:
        step = timedelta(seconds=self.interval_seconds)
        if instant < self._anchor():
            return
        tick = self._anchor() + ((instant - self._anchor()) // step) * step
        while tick >= self._anchor():
            yield tick
            tick -= step

    def _cron_from(self, instant: datetime) -> Iterator[datetime]:
        zone = ZoneInfo(self.time_zone)
        # Earlier wall-clock times can be this instant: a gap's, when it is the gap's end. So
        # start the length of any gap just before it earlier, and a minute more, as CronSim
        # starts after its start.
        gap = (
            instant.astimezone(zone).utcoffset()
            - (instant - MAX_SHIFT).astimezone(zone).utcoffset()
        )
        wall = instant.astimezone(zone).replace(tzinfo=None) - max(gap, timedelta(0)) - ONE_MINUTE
        yield from _distinct(wall_clock_instant(match, zone) for match in CronSim(self.cron, wall))

    def _cron_back_from(self, instant: datetime) -> Iterator[datetime]:
        zone = ZoneInfo(self.time_zone)
        # Later wall-clock times can be earlier instants (a repeated hour's second pass).
        wall = instant.astimezone(zone).replace(tzinfo=None) + MAX_SHIFT
        matches = CronSim(self.cron, wall, reverse=True)
        yield from _distinct(wall_clock_instant(match, zone) for match in matches)


def _distinct(instants: Iterator[datetime]) -> Iterator[datetime]:
    """Drop repeats: a gap's matches all land on the instant after it."""
    previous = None
    for instant in instants:
        if instant != previous:
            yield instant
        previous = instant


def wall_clock_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall-clock time fires at in `zone`, by the DST policy above."""
    first = wall.replace(tzinfo=zone, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) == wall:
        return as_utc  # It exists; fold=0 is its first occurrence if it has two.
    # In a gap, fold=0 reads the time with the offset from before the transition, which lands
    # after it, and fold=1 with the offset from after, which lands before: find the transition
    # between them, to the second.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after_offset = as_utc.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(as_utc.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
