from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from jobs.admin_pagination import EstimatedCountPaginator
from schedules.models import Schedule
from schedules.selectors import last_runs, next_runs
from schedules.services import schedule_delete, schedule_pause, schedule_resume


@admin.action(description="Pause the selected schedules")
def pause(modeladmin, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
    for schedule in queryset:
        schedule_pause(schedule=schedule)
    modeladmin.message_user(request, f"Paused {len(queryset)} schedule(s).", messages.SUCCESS)


@admin.action(description="Resume the selected schedules from their next tick")
def resume(modeladmin, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
    for schedule in queryset:
        schedule_resume(schedule=schedule)
    modeladmin.message_user(request, f"Resumed {len(queryset)} schedule(s).", messages.SUCCESS)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Users' schedules, read-only but for pausing and resuming: owners edit them in the API,
    whose services keep next_fire_at right."""

    list_display = ["name", "owner", "timetable", "time_zone", "enabled", "next_fire_at"]
    list_filter = ["enabled", "overlap_policy", "catchup_policy"]
    search_fields = ["name", "owner__email"]
    list_select_related = ["owner"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = [pause, resume]
    fields = [
        "owner",
        "name",
        "timetable",
        "time_zone",
        "start_at",
        "end_at",
        "enabled",
        "job_type",
        "parameters",
        "timeout_seconds",
        "max_retries",
        "priority",
        "overlap_policy",
        "catchup_policy",
        "catchup_window_seconds",
        "jitter_seconds",
        "next_fire_at",
        "next_runs_preview",
        "last_runs_shown",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # Owners create schedules through the API.

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        schedule_delete(schedule=obj)  # Safe against runs being added meanwhile.

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_delete(schedule=schedule)

    @admin.display(description="timetable")
    def timetable(self, schedule: Schedule) -> str:
        return schedule.cron or f"every {schedule.interval_seconds} s"

    @admin.display(description="next runs (tick, start with jitter)")
    def next_runs_preview(self, schedule: Schedule) -> str:
        runs = next_runs(schedule)
        if not runs:
            return "None: paused or ended."
        rows = ((run["fire_time"].isoformat(), run["starts_at"].isoformat()) for run in runs)
        return format_html_join("", "<div>{} &rarr; {}</div>", rows)

    @admin.display(description="last runs")
    def last_runs_shown(self, schedule: Schedule) -> str:
        runs = last_runs(schedule)
        if not runs:
            return "None yet."
        rows = (
            (run.fire_time.isoformat(), run.kind, run.job_id or "-", run.status, run.skipped)
            for run in runs
        )
        return format_html_join("", "<div>{} {}, job {}: {} {}</div>", rows)
