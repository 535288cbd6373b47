import re
from datetime import datetime
from uuid import UUID

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from job_system.json_depth import stored_json_for_display
from jobs import handlers, services
from jobs.admin_pagination import EstimatedCountPaginator
from jobs.models import Job, JobResult
from jobs.services import transitions


class OutputAsStored:
    """Show a result's output from its stored text, which any depth of nesting can take.

    Nothing decodes the output (or its job's parameters) on the way: a value stored before
    JSON nesting was limited may be too deep to decode within the admin
    (job_system.json_depth).
    """

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobResult]:
        return (
            super().get_queryset(request).select_related("job").defer("output", "job__parameters")
        )

    @admin.display(description="output")
    def output_as_stored(self, result: JobResult) -> str:
        return stored_json_for_display(result, "output")


class JobResultInline(OutputAsStored, admin.StackedInline):
    model = JobResult
    fields = ["output_as_stored", "completed_at", "duration_ms"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _apply(modeladmin, request, queryset: QuerySet[Job], change, verb: str) -> None:
    done = skipped = capped = 0
    for job in queryset:
        try:
            change(job=job)
            done += 1
        except services.JobStateError:
            skipped += 1
        except services.TooManyActiveJobs:
            capped += 1
    modeladmin.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
    if skipped:
        modeladmin.message_user(
            request, f"Skipped {skipped} job(s) whose state does not allow it.", messages.WARNING
        )
    if capped:
        modeladmin.message_user(
            request,
            f"Skipped {capped} job(s) whose owner already has MAX_ACTIVE_JOBS_PER_USER pending "
            "or running jobs.",
            messages.WARNING,
        )


@admin.action(description="Cancel selected pending or running jobs")
def cancel_jobs(modeladmin, request, queryset):
    _apply(modeladmin, request, queryset, services.job_cancel, "Cancelled")


@admin.action(description="Retry selected failed or cancelled jobs")
def retry_jobs(modeladmin, request, queryset):
    _apply(modeladmin, request, queryset, services.job_retry, "Requeued")


@admin.action(description="Prune selected jobs that have expired (delete them now)")
def prune_expired_jobs(modeladmin, request, queryset):
    counts = services.jobs_prune_expired(among=queryset)
    modeladmin.message_user(
        request,
        f"Deleted {counts['deleted']} expired job(s) with their results, attempts and events. "
        "Selected jobs that have not expired were kept.",
        messages.SUCCESS,
    )


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


# Enough of a UUID to tell jobs apart in a list; the admin searches by prefixes this long or longer.
SHORT_ID_LENGTH = 8
ID_PREFIX = re.compile(rf"[0-9a-f]{{{SHORT_ID_LENGTH},32}}")


def id_prefix_bounds(term: str) -> tuple[UUID, UUID] | None:
    """Return the lowest and the highest UUID that start with `term`, if it is an id prefix.

    Dashes are ignored, so a prefix may be copied from the full id or typed without them.
    """
    digits = term.strip().lower().replace("-", "")
    if not ID_PREFIX.fullmatch(digits):
        return None
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def with_seconds(moment: datetime | None) -> str:
    """Format a time to the second, in the admin's time zone; attempts often take seconds."""
    if moment is None:
        return "-"
    return formats.date_format(timezone.localtime(moment), "N j, Y, H:i:s")


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
    # Narrow enough for a 1,400 px screen: a short id, and when the job started and finished
    # only on its page, in its attempts (see also changelist_view).
    list_display = [
        "short_id",
        "name",
        "job_type",
        "status",
        "owner",
        "attempts",
        "progress",
        "created_at",
    ]
    list_filter = ["status", JobTypeFilter, "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__email"]
    search_help_text = (
        f"An id, or its first {SHORT_ID_LENGTH} characters or more; otherwise words of the "
        "name or the owner's email."
    )
    # No date_hierarchy: its year/month/day links take a MIN/MAX and a SELECT DISTINCT over
    # every row on each page view (0.8 s at a million jobs); the created_at filter stays.
    actions = [cancel_jobs, retry_jobs, requeue_stuck_jobs, prune_expired_jobs]
    inlines = [JobResultInline]
    # Counting a million rows on every page view would be the next slowest part.
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {"fields": ["id", "owner", "name", "description", "job_type", "parameters_as_stored"]},
        ),
        ("Schedule", {"fields": ["scheduled_time", "priority", "max_retries"]}),
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
                    "expires_at",
                ]
            },
        ),
        ("Attempts", {"fields": ["attempt_history"]}),
        (
            "Worker bookkeeping",
            {
                "classes": ["collapse"],
                "fields": [
                    "queue",
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

    def save_model(self, request: HttpRequest, obj: Job, form, change: bool) -> None:
        # Only the labels: saving the whole row would write back the status and lease the
        # form loaded, over whatever a worker wrote since.
        labels = {name: getattr(obj, name) for name in self.editable_fields}
        transitions.apply(transitions.RELABEL, obj.pk, **labels)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        # The columns need the screen's width, of which the admin's menu would take a fifth;
        # the breadcrumbs still lead everywhere.
        extra_context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, extra_context)

    @admin.display(description="ID", ordering="pk")
    def short_id(self, job: Job) -> str:
        return format_html('<span title="{}">{}</span>', job.pk, str(job.pk)[:SHORT_ID_LENGTH])

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """Find jobs by an id prefix, or else by words of their name or owner's email.

        A prefix is a range of UUIDs, which the primary key's index serves. Alone, not OR-ed
        with the text search, which reads every row.
        """
        if bounds := id_prefix_bounds(search_term):
            return queryset.filter(pk__range=bounds), False
        return super().get_search_results(request, queryset, search_term)

    # Parameters are shown from their stored text and never decoded here, for the reason
    # OutputAsStored gives.
    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).defer("parameters")

    @admin.display(description="parameters")
    def parameters_as_stored(self, job: Job) -> str:
        return stored_json_for_display(job, "parameters")

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
                    with_seconds(attempt.started_at),
                    with_seconds(attempt.finished_at),
                    attempt.get_outcome_display(),
                    attempt.error_message,
                )
                for attempt in attempts
            ),
        )
        return format_html("<table>{}{}</table>", header, rows)


@admin.register(JobResult)
class JobResultAdmin(OutputAsStored, admin.ModelAdmin):
    list_display = ["job", "completed_at", "duration_ms", "output_bytes"]
    list_select_related = ["job"]
    search_fields = ["=job__id", "job__name", "job__owner__email"]
    fields = ["job", "output_as_stored", "output_bytes", "completed_at", "duration_ms"]
    readonly_fields = fields
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
