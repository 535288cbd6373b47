from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from jobs import handlers, services
from jobs.admin_pagination import EstimatedCountPaginator
from jobs.models import Job, JobResult


class JobResultInline(admin.StackedInline):
    model = JobResult
    fields = ["output", "completed_at", "duration_ms"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _apply(modeladmin, request, queryset: QuerySet[Job], change, verb: str) -> None:
    done = skipped = 0
    for job in queryset:
        try:
            change(job=job)
            done += 1
        except services.JobStateError:
            skipped += 1
    modeladmin.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
    if skipped:
        modeladmin.message_user(
            request, f"Skipped {skipped} job(s) whose state does not allow it.", messages.WARNING
        )


@admin.action(description="Cancel selected pending or running jobs")
def cancel_jobs(modeladmin, request, queryset):
    _apply(modeladmin, request, queryset, services.job_cancel, "Cancelled")


@admin.action(description="Retry selected failed or cancelled jobs")
def retry_jobs(modeladmin, request, queryset):
    _apply(modeladmin, request, queryset, services.job_retry, "Requeued")


@admin.action(description="Requeue selected stuck jobs (lost worker or lost message)")
def requeue_stuck_jobs(modeladmin, request, queryset):
    counts = services.jobs_requeue_stuck(jobs=queryset)
    modeladmin.message_user(
        request,
        f"Republished {counts['republished']} pending job(s) whose message was lost; requeued "
        f"{counts['requeued']} and failed {counts['failed']} (out of retries) running job(s) "
        "whose worker was lost. Jobs that were not stuck were left alone.",
        messages.SUCCESS,
    )


class JobTypeFilter(admin.SimpleListFilter):
    """Job types from the registry: the default filter would SELECT DISTINCT the whole table."""

    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in handlers.names()]

    def queryset(self, request, queryset):
        return queryset.filter(job_type=self.value()) if self.value() else queryset


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "job_type",
        "status",
        "owner",
        "attempts",
        "progress",
        "created_at",
        "started_at",
        "completed_at",
    ]
    list_filter = ["status", JobTypeFilter, "created_at"]
    list_select_related = ["owner"]
    search_fields = ["=id", "name", "owner__email"]
    # No date_hierarchy: its year/month/day links take a MIN/MAX and a SELECT DISTINCT over
    # every row on each page view (0.8 s at a million jobs); the created_at filter stays.
    actions = [cancel_jobs, retry_jobs, requeue_stuck_jobs]
    inlines = [JobResultInline]
    # Counting a million rows on every page view would be the next slowest part.
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["id", "owner", "name", "description", "job_type", "parameters"]}),
        ("Schedule", {"fields": ["scheduled_time", "max_retries"]}),
        (
            "State",
            {
                "fields": [
                    "status",
                    "progress",
                    "attempts",
                    "error_message",
                    "error_traceback",
                    "created_at",
                    "updated_at",
                    "started_at",
                    "completed_at",
                ]
            },
        ),
        ("Attempts", {"fields": ["attempt_history"]}),
        (
            "Worker bookkeeping",
            {
                "classes": ["collapse"],
                "fields": [
                    "run_after",
                    "enqueued_at",
                    "dispatch_token",
                    "claim_token",
                    "lease_expires_at",
                    "worker",
                ],
            },
        ),
    ]

    # Parameters were validated for their type when the job came in; editing them here would
    # skip that, so only the labels stay editable.
    editable_fields = {"name", "description"}

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [
            field
            for _, options in self.fieldsets
            for field in options["fields"]
            if field not in self.editable_fields
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Jobs come in through the API, which validates parameters and publishes them.
        return False

    # A table rather than an inline formset: attempts are history, never edited, and a
    # formset would make every save of the job's labels post its management form.
    @admin.display(description="Attempts")
    def attempt_history(self, job: Job) -> str:
        attempts = job.attempt_history
        if not attempts:
            return "None yet."
        header = mark_safe(  # A constant: nothing in it comes from a user.
            "<tr><th>#</th><th>Worker</th><th>Started</th><th>Finished</th>"
            "<th>Outcome</th><th>Error</th></tr>"
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    attempt.number,
                    attempt.worker,
                    display_for_value(attempt.started_at, ""),
                    display_for_value(attempt.finished_at, "-"),
                    attempt.get_outcome_display(),
                    attempt.error_message,
                )
                for attempt in attempts
            ),
        )
        return format_html("<table>{}{}</table>", header, rows)


@admin.register(JobResult)
class JobResultAdmin(admin.ModelAdmin):
    list_display = ["job", "completed_at", "duration_ms", "output_bytes"]
    list_select_related = ["job"]
    search_fields = ["=job__id", "job__name", "job__owner__email"]
    readonly_fields = ["job", "output", "output_bytes", "completed_at", "duration_ms"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobResult]:
        # The list shows no output: a page of 100 must not load 100 outputs of up to
        # JOB_MAX_RESULT_BYTES each. A result's own page loads its output when it shows it.
        return super().get_queryset(request).defer("output")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
