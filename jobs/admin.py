from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import services
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
    list_filter = ["status", "job_type", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["=id", "name", "owner__email"]
    date_hierarchy = "created_at"
    actions = [cancel_jobs, retry_jobs]
    inlines = [JobResultInline]
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


@admin.register(JobResult)
class JobResultAdmin(admin.ModelAdmin):
    list_display = ["job", "completed_at", "duration_ms"]
    list_select_related = ["job"]
    search_fields = ["=job__id", "job__name", "job__owner__email"]
    date_hierarchy = "completed_at"
    readonly_fields = ["job", "output", "completed_at", "duration_ms"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
