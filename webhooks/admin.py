from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.admin_pagination import EstimatedCountPaginator
from webhooks.endpoints import endpoint_delete, endpoint_update
from webhooks.models import DeliveryAttempt, Endpoint


class DeliveryAttemptInline(admin.TabularInline):
    """The endpoint's latest attempts: time, status code, latency and the answer's start."""

    model = DeliveryAttempt
    fields = [
        "attempted_at",
        "webhook_id",
        "event",
        "succeeded",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    ]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    # The newest 50; the API's delivery log pages through all of them.
    SHOWN = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryAttempt]:
        attempts = super().get_queryset(request).select_related("delivery__event")
        newest = attempts.order_by("-attempted_at").values_list("pk", flat=True)[: self.SHOWN]
        return attempts.filter(pk__in=list(newest)).order_by("-attempted_at")

    @admin.display(description="webhook-id")
    def webhook_id(self, attempt: DeliveryAttempt) -> str:
        return attempt.delivery.webhook_id

    @admin.display(description="event")
    def event(self, attempt: DeliveryAttempt) -> str:
        return str(attempt.delivery.event)


@admin.action(description="Enable the selected endpoints (resumes their deliveries)")
def enable(modeladmin, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
    for endpoint in queryset:
        endpoint_update(endpoint=endpoint, enabled=True)
    modeladmin.message_user(request, f"Enabled {len(queryset)} endpoint(s).", messages.SUCCESS)


@admin.action(description="Disable the selected endpoints (their deliveries wait)")
def disable(modeladmin, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
    for endpoint in queryset:
        endpoint_update(endpoint=endpoint, enabled=False)
    modeladmin.message_user(request, f"Disabled {len(queryset)} endpoint(s).", messages.SUCCESS)


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = [
        "url",
        "owner",
        "enabled",
        "job",
        "consecutive_failures",
        "failing_since",
        "disabled_reason",
        "created_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["url", "owner__email"]
    list_select_related = ["owner"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = [enable, disable]
    inlines = [DeliveryAttemptInline]
    # The secret is never shown; the owner saw it once, and rotates it through the API.
    fields = [
        "owner",
        "url",
        "description",
        "event_types",
        "enabled",
        "job",
        "created_at",
        "failing_since",
        "consecutive_failures",
        "retry_at",
        "disabled_at",
        "disabled_reason",
    ]
    readonly_fields = [
        "owner",
        "url",
        "job",
        "created_at",
        "failing_since",
        "consecutive_failures",
        "retry_at",
        "disabled_at",
        "disabled_reason",
    ]
    raw_id_fields = ["job"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # An endpoint's secret is for its owner: they add it through the API.

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        endpoint_delete(endpoint=obj)  # Safe against deliveries being made meanwhile.

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            endpoint_delete(endpoint=endpoint)
