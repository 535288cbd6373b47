from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from job_system.openapi import request_example
from jobs.pagination import NewestFirstPagination
from jobs.views import TooManyActiveJobsError
from schedules import services
from schedules.models import Schedule, ScheduleRun
from schedules.selectors import schedules_of
from schedules.serializers import (
    ScheduleDetailSerializer,
    ScheduleRunSerializer,
    ScheduleSerializer,
)


class TooManySchedulesError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "too_many_schedules"


class UnknownJobTypeError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "unknown_job_type"


@contextmanager
def deleted_meanwhile_is_not_found() -> Iterator[None]:
    """404 for a schedule that another request deleted after this one found it."""
    try:
        yield
    except Schedule.DoesNotExist as exc:
        raise NotFound from exc


WEEKDAYS_IN_BERLIN = {
    "name": "morning report",
    "cron": "0 7 * * mon-fri",
    "time_zone": "Europe/Berlin",
    "job": {"job_type": "echo", "parameters": {"message": "good morning"}},
}
EVERY_15_MINUTES = {
    "name": "poll",
    "interval_seconds": 900,
    "job": {"job_type": "echo", "parameters": {"message": "tick"}},
    "overlap_policy": "skip",
    "catchup_policy": "latest",
}


@extend_schema_view(
    list=extend_schema(summary="List your schedules, newest first"),
    retrieve=extend_schema(
        summary="Show a schedule, its next 10 ticks and its last runs",
        responses={200: ScheduleDetailSerializer},
    ),
    create=extend_schema(
        summary="Create a recurring schedule",
        examples=[
            request_example("Every weekday at 07:00 Berlin time", WEEKDAYS_IN_BERLIN),
            request_example("Every 15 minutes", EVERY_15_MINUTES),
        ],
        responses={
            201: ScheduleDetailSerializer,
            409: OpenApiResponse(description="`too_many_schedules`: delete one first."),
        },
    ),
    partial_update=extend_schema(
        summary="Change a schedule",
        description="A new `job` replaces the whole template. A change of `cron`, "
        "`interval_seconds`, `time_zone`, `start_at` or `end_at` starts the ticks afresh from "
        "now.",
        examples=[request_example("Move it to 08:00", {"cron": "0 8 * * mon-fri"})],
        responses={200: ScheduleDetailSerializer},
    ),
    destroy=extend_schema(summary="Delete a schedule and its runs; its jobs stay"),
)
class ScheduleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Schedule.objects.none()  # The model, for the schema; see get_queryset.
    serializer_class = ScheduleSerializer
    pagination_class = NewestFirstPagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Schedule]:
        return schedules_of(self.request.user)

    def get_serializer_class(self):
        return ScheduleSerializer if self.action == "list" else ScheduleDetailSerializer

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            schedule = services.schedule_create(owner=request.user, **serializer.validated_data)
        except services.TooManySchedules as exc:
            raise TooManySchedulesError(str(exc)) from exc
        return Response(self.get_serializer(schedule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk=None) -> Response:
        schedule = self.get_object()
        serializer = self.get_serializer(schedule, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with deleted_meanwhile_is_not_found():
            schedule = services.schedule_update(schedule=schedule, **serializer.validated_data)
        return Response(self.get_serializer(schedule).data)

    def perform_destroy(self, instance: Schedule) -> None:
        services.schedule_delete(schedule=instance)

    @extend_schema(
        summary="Run the schedule's job now",
        description="Whatever the overlap policy, and also while paused. The run is "
        "recorded among the schedule's runs, with the time of the request as its tick.",
        request=None,
        responses={
            201: ScheduleRunSerializer,
            409: OpenApiResponse(
                description="`unknown_job_type`: the schedule's job type no longer exists; "
                "change its `job`. The run is recorded as skipped."
            ),
            429: OpenApiResponse(
                description="`too_many_active_jobs`: wait for some of your jobs to finish."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def trigger(self, request: Request, pk=None) -> Response:
        with deleted_meanwhile_is_not_found():
            run = services.schedule_trigger(schedule=self.get_object())
        if run.skipped == ScheduleRun.Skipped.ACTIVE_JOB_CAP:
            raise TooManyActiveJobsError(
                "You have as many pending or running jobs as one user may; the run was skipped."
            )
        if run.skipped == ScheduleRun.Skipped.UNKNOWN_JOB_TYPE:
            raise UnknownJobTypeError(
                f"The job type {run.schedule.job_type!r} no longer exists; change the "
                "schedule's job. The run was skipped."
            )
        return Response(ScheduleRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Pause a schedule: no tick fires until it is resumed",
        request=None,
        responses={200: ScheduleDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk=None) -> Response:
        with deleted_meanwhile_is_not_found():
            schedule = services.schedule_pause(schedule=self.get_object())
        return Response(ScheduleDetailSerializer(schedule).data)

    @extend_schema(
        summary="Resume a schedule from its next tick after now",
        description="Ticks that passed while it was paused do not run.",
        request=None,
        responses={200: ScheduleDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        with deleted_meanwhile_is_not_found():
            schedule = services.schedule_resume(schedule=self.get_object())
        return Response(ScheduleDetailSerializer(schedule).data)
