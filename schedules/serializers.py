"""Validation of schedules as clients send them, and what they get back.

Serializers never write: views pass validated data to schedules.services.
"""

import zoneinfo
from datetime import timedelta
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from job_system.serializers import FieldsBuiltOnceMixin, StrictTypesMixin
from jobs.serializers import JobCreateSerializer, validate_for_job_type
from schedules import ticks
from schedules.models import CatchupPolicy, OverlapPolicy, Schedule, ScheduleRun
from schedules.selectors import NEXT_RUNS, last_runs, next_runs

# Names zoneinfo knows that are not places.
NOT_ZONES = {"Factory", "localtime", "posixrules"}
TIME_ZONES = frozenset(zoneinfo.available_timezones() - NOT_ZONES)
# Ticks looked at for the shortest gap of a cron expression, and the span they may cover.
GAP_SAMPLE = 50
SAMPLE_SPAN = timedelta(days=366)
MAX_JITTER_SECONDS = 24 * 60 * 60
MAX_INTERVAL_SECONDS = 366 * 24 * 60 * 60
CRON_HELP = (
    "Five fields: minute, hour, day of month, month, day of week, with names (`jan`, `mon`), "
    "ranges, lists and steps, matched against the wall clock of `time_zone`: `0 7 * * 1-5` is "
    "every weekday at 07:00. Give this or `interval_seconds`."
)


class JobTemplateSerializer(FieldsBuiltOnceMixin, StrictTypesMixin, serializers.Serializer):
    """The job each tick submits."""

    def run_validation(self, data=serializers.empty):
        # A template is replaced whole, by PATCH too: validate it as a new one, defaults and all.
        if data is not serializers.empty and self.parent is not None and self.root.partial:
            template = JobTemplateSerializer(data=data)
            template.is_valid(raise_exception=True)
            return template.validated_data
        return super().run_validation(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return validate_for_job_type(attrs)


# The fields of POST /api/jobs/ that a template shares, so that the two never disagree. Set
# after the class, whose metaclass collects the fields declared in its body.
JobTemplateSerializer._declared_fields = {
    name: JobCreateSerializer._declared_fields[name]
    for name in ("job_type", "parameters", "timeout_seconds", "max_retries", "priority")
}


class ScheduleSerializer(FieldsBuiltOnceMixin, StrictTypesMixin, serializers.ModelSerializer):
    name = serializers.CharField(max_length=200)
    # Each is null in an answer when the schedule has the other; null in a request is the same
    # as leaving it out.
    cron = serializers.CharField(
        max_length=200, required=False, allow_blank=False, allow_null=True, help_text=CRON_HELP
    )
    interval_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        # The setting's bound is checked in validate_interval_seconds, as the setting may
        # change after start-up (tests change it).
        min_value=1,
        max_value=MAX_INTERVAL_SECONDS,
        help_text="Fire every this many seconds, counted in UTC from `start_at` (or from "
        "1970-01-01T00:00Z), whatever DST does. At least SCHEDULE_MIN_INTERVAL_SECONDS. Give "
        "this or `cron`.",
    )
    # A string, not an enum of some 600 names: generated clients choke on names such as GMT+0
    # and GMT-0, which become the same identifier.
    time_zone = serializers.CharField(
        max_length=64,
        required=False,
        default="UTC",
        help_text="The IANA time zone the cron expression's wall clock is read in: "
        "`Europe/Berlin`, `America/New_York`, `UTC`.",
    )
    job = JobTemplateSerializer(help_text="The job each tick submits.")
    start_at = serializers.DateTimeField(required=False, allow_null=True)
    end_at = serializers.DateTimeField(required=False, allow_null=True)
    enabled = serializers.BooleanField(required=False, default=True)
    overlap_policy = serializers.ChoiceField(
        choices=OverlapPolicy.choices,
        required=False,
        default=OverlapPolicy.SKIP,
        help_text="When a tick comes while the previous run is pending or running: `skip` it, "
        "`buffer_one` (run one when the previous finishes; more are skipped), or `allow` it.",
    )
    catchup_policy = serializers.ChoiceField(
        choices=CatchupPolicy.choices,
        required=False,
        default=CatchupPolicy.SKIP,
        help_text="Ticks missed while the service was down: `skip` them, run the `latest` "
        "once, or run `all` of them within `catchup_window_seconds` (at most "
        "SCHEDULE_CATCHUP_MAX_RUNS, the latest ones).",
    )
    catchup_window_seconds = serializers.IntegerField(
        required=False,
        default=3600,
        min_value=1,
        max_value=settings.SCHEDULE_CATCHUP_MAX_WINDOW_SECONDS,
    )
    jitter_seconds = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_JITTER_SECONDS,
        help_text="Start each run up to this much later than its tick, by an amount fixed "
        "for each tick, and always before the next tick.",
    )

    class Meta:
        model = Schedule
        fields = [
            "id",
            "name",
            "cron",
            "interval_seconds",
            "time_zone",
            "start_at",
            "end_at",
            "enabled",
            "job",
            "overlap_policy",
            "catchup_policy",
            "catchup_window_seconds",
            "jitter_seconds",
            "next_fire_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "next_fire_at", "created_at", "updated_at"]

    def to_representation(self, instance: Schedule) -> dict[str, Any]:
        data = super().to_representation(_with_job(instance))
        data["cron"] = instance.cron or None
        return data

    def validate_cron(self, value: str | None) -> str | None:
        if value is None:
            return value
        value = " ".join(value.split())
        try:
            ticks.check_cron(value)
        except ticks.InvalidCron as exc:
            raise serializers.ValidationError(str(exc), code="invalid") from None
        sample = _gap_sample(value)
        if not sample:
            raise serializers.ValidationError(
                "This expression matches no time in the next 50 years.", code="never"
            )
        gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(sample)]
        if gaps and min(gaps) < settings.SCHEDULE_MIN_INTERVAL_SECONDS:
            raise serializers.ValidationError(_too_often(), code="too_often")
        return value

    def validate_time_zone(self, value: str) -> str:
        if value not in TIME_ZONES:
            raise serializers.ValidationError(
                f'"{value}" is not an IANA time zone, such as Europe/Berlin.', code="invalid_choice"
            )
        return value

    def validate_interval_seconds(self, value: int | None) -> int | None:
        if value is not None and value < settings.SCHEDULE_MIN_INTERVAL_SECONDS:
            raise serializers.ValidationError(_too_often(), code="min_value")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "job" in attrs:
            attrs.update(attrs.pop("job"))
        for name in ("cron", "interval_seconds"):
            if name in attrs and attrs[name] is None:
                del attrs[name]
        given = {name for name in ("cron", "interval_seconds") if name in attrs}
        if given == {"cron", "interval_seconds"}:
            raise serializers.ValidationError(
                {"interval_seconds": ["Give `cron` or `interval_seconds`, not both."]},
                code="both",
            )
        if not given and self.instance is None:
            raise serializers.ValidationError(
                {"cron": ["Give `cron` or `interval_seconds`."]}, code="required"
            )
        start_at = attrs.get("start_at", getattr(self.instance, "start_at", None))
        end_at = attrs.get("end_at", getattr(self.instance, "end_at", None))
        if end_at is not None and "end_at" in attrs and end_at <= timezone.now():
            raise serializers.ValidationError(
                {"end_at": ["This time has passed; the schedule would never fire."]},
                code="past",
            )
        if start_at and end_at and end_at <= start_at:
            raise serializers.ValidationError(
                {"end_at": ["Give a time after `start_at`."]}, code="before_start"
            )
        return attrs


def _gap_sample(cron: str) -> list:
    """The expression's first ticks from now: at most GAP_SAMPLE, within a year of the first.

    The year bounds the cost of a sparse expression (`0 0 * 2 mon#5` ticks every 28 years or
    so, each tick a long search); gaps of a minute repeat within any year that has one.
    """
    sample: list = []
    for tick in ticks.Timing(cron=cron).ticks_from(timezone.now()):
        if len(sample) == GAP_SAMPLE or (sample and tick - sample[0] > SAMPLE_SPAN):
            break
        sample.append(tick)
    return sample


def _too_often() -> str:
    return (
        f"A schedule may fire at most once every {settings.SCHEDULE_MIN_INTERVAL_SECONDS} seconds."
    )


def _with_job(schedule: Schedule) -> Schedule:
    """Give the schedule its template as one `job` attribute, as the API shows it."""
    schedule.job = {
        "job_type": schedule.job_type,
        "parameters": schedule.parameters,
        "timeout_seconds": schedule.timeout_seconds,
        "max_retries": schedule.max_retries,
        "priority": schedule.priority,
    }
    return schedule


class NextRunSerializer(serializers.Serializer):
    fire_time = serializers.DateTimeField(help_text="The tick.")
    starts_at = serializers.DateTimeField(
        help_text="When its job may start: the tick plus its jitter."
    )


class LastRunSerializer(serializers.ModelSerializer):
    status = serializers.CharField(
        read_only=True,
        help_text="The job's status; `skipped` if the tick made no job (see `skipped`), "
        "`deleted` if its job is gone.",
    )

    class Meta:
        model = ScheduleRun
        fields = ["fire_time", "kind", "job", "status", "skipped"]


class ScheduleDetailSerializer(ScheduleSerializer):
    next_runs = serializers.SerializerMethodField(
        help_text=f"The next {NEXT_RUNS} ticks that will fire; empty while paused."
    )
    last_runs = serializers.SerializerMethodField(
        help_text="The latest runs, newest tick first: triggered, skipped and caught-up ones too."
    )

    class Meta(ScheduleSerializer.Meta):
        fields = [*ScheduleSerializer.Meta.fields, "next_runs", "last_runs"]

    def get_next_runs(self, schedule: Schedule) -> list[dict]:
        return NextRunSerializer(next_runs(schedule), many=True).data

    def get_last_runs(self, schedule: Schedule) -> list[dict]:
        return LastRunSerializer(last_runs(schedule), many=True).data


class ScheduleRunSerializer(LastRunSerializer):
    """What POST /api/schedules/{id}/trigger/ answers: the run it made."""
