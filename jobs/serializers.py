"""Validation of what clients send, and the shape of what they get back.

Serializers never write: views pass validated data to the services.
"""

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from job_system.json_depth import limit_json_depth
from job_system.serializers import (
    FieldsBuiltOnceMixin,
    ListField,
    StrictTypesMixin,
    indefinite_article,
    json_type_errors,
)
from jobs import handlers
from jobs.handlers.base import JobHandler
from jobs.models import DEFAULT_PRIORITY, Job, JobAttempt, JobResult
from jobs.schema import serializer_json_schema
from jobs.selectors import WaitingFor, WaitingReasons
from webhooks.serializers import WebhookUrlField

MAX_RETRIES_LIMIT = 10
PARAMETERS_HELP = "The job type's parameters; GET /api/job-types/ shows each type's schema."
WAITING_FOR_HELP = (
    "Why a pending job has not started (null unless pending): `scheduled_time`, "
    "`retry_backoff`, `user_concurrency_limit` (you have as many jobs running as your limit "
    "allows), `type_concurrency_limit` (as many jobs of its type run as the type allows), or "
    "`worker` (it waits for a free worker process, taking turns with other users' jobs)."
)
TIMEOUT_HELP = (
    "Stop an attempt that runs longer than this. Omit for the job type's limit, which is also "
    "the most you may ask for (see GET /api/job-types/)."
)


class JobCreateSerializer(FieldsBuiltOnceMixin, StrictTypesMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(
        max_length=10_000, required=False, allow_blank=True, default=""
    )
    job_type = serializers.ChoiceField(
        choices=handlers.names(),
        default=handlers.DEFAULT_JOB_TYPE,
        help_text="One of the types listed by GET /api/job-types/.",
    )
    # Every type's parameters, echo's free-form `data` among them, within the one JSON limit.
    parameters = serializers.DictField(
        required=False, default=dict, help_text=PARAMETERS_HELP, validators=[limit_json_depth]
    )
    scheduled_time = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Start no earlier than this (ISO 8601). Omit or null to start now.",
    )
    max_retries = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0,
        max_value=MAX_RETRIES_LIMIT,
        help_text="Retries after a failed attempt. Omit for the job type's default.",
    )

    timeout_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        help_text=TIMEOUT_HELP,
    )
    priority = serializers.IntegerField(
        required=False,
        default=DEFAULT_PRIORITY,
        min_value=0,
        max_value=9,
        help_text="0-9, default 5: among your own waiting jobs, higher ones start first. It "
        "orders only your jobs; other users' jobs take turns with yours either way.",
    )
    callback_url = WebhookUrlField(
        required=False,
        help_text="A URL to POST the job's terminal event to (job.completed, job.failed or "
        "job.cancelled), signed like any webhook with the `callback_secret` of the answer.",
    )

    def validate_scheduled_time(self, value):
        # A request that repeats an Idempotency-Key gets what the key's first request made, or
        # 409: a time that has passed since must not keep a client from learning what it made.
        if self.context.get("idempotency_key_used"):
            return value
        if value is not None and value < timezone.now():
            raise serializers.ValidationError(
                "The scheduled time is in the past. Use a future time, or omit it to run now.",
                code="past",
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return validate_for_job_type(attrs)


def validate_for_job_type(attrs: dict[str, Any]) -> dict[str, Any]:
    """Check a job's parameters and timeout against its type (a job's, or a schedule's)."""
    handler = handlers.get(attrs["job_type"])
    attrs["parameters"] = validate_parameters(handler.Parameters, attrs["parameters"])
    timeout = attrs.get("timeout_seconds")
    if timeout is not None and timeout > handler.timeout_seconds:
        raise serializers.ValidationError(
            {
                "timeout_seconds": [
                    f"{one_job_of(handler)} may run for at most {handler.timeout_seconds} seconds."
                ]
            },
            code="max_value",
        )
    return attrs


def one_job_of(handler: JobHandler) -> str:
    """Begin a sentence about one job of a type: "An echo job", "A sleep job"."""
    return f"{indefinite_article(handler.name).capitalize()} {handler.name} job"


def job_create_variant(handler: JobHandler) -> type[JobCreateSerializer]:
    """Return JobCreateSerializer as it stands for one job type, for the schema.

    Its `job_type` is that type, its `parameters` are that type's, and its `timeout_seconds`
    stops at that type's limit, so that a client (or a fuzzer) can tell a valid body from the
    schema alone.
    """
    title = "".join(part.title() for part in handler.name.split("_"))
    parameters_schema = serializer_json_schema(handler.Parameters())
    parameters_field = extend_schema_field(parameters_schema, component_name=f"{title}Parameters")(
        type(f"{title}ParametersField", (serializers.DictField,), {})
    )
    is_default = handler.name == handlers.DEFAULT_JOB_TYPE
    return type(
        f"{title}JobCreateSerializer",
        (JobCreateSerializer,),
        {
            "__doc__": f"{one_job_of(handler)} to submit. {handler.description}",
            "job_type": serializers.ChoiceField(
                choices=[handler.name],
                required=not is_default,
                **({"default": handler.name} if is_default else {}),
            ),
            "parameters": parameters_field(
                required="required" in parameters_schema, help_text=PARAMETERS_HELP
            ),
            "timeout_seconds": serializers.IntegerField(
                required=False,
                allow_null=True,
                min_value=1,
                max_value=handler.timeout_seconds,
                help_text=TIMEOUT_HELP,
            ),
        },
    )


# The body of POST /api/jobs/, one variant per job type.
JOB_CREATE_REQUEST = PolymorphicProxySerializer(
    component_name="JobCreate",
    serializers=[job_create_variant(handler) for handler in handlers.all_handlers()],
    resource_type_field_name=None,
    many=False,
)


def validate_parameters(
    parameters_class: type[serializers.Serializer], data: dict[str, Any]
) -> dict[str, Any]:
    """Validate a job's parameters against its type, with errors keyed under `parameters`."""
    parameters = parameters_class(data=data)
    errors = json_type_errors(parameters, data)
    if not errors and not parameters.is_valid():
        errors = dict(parameters.errors)
    for unknown in sorted(set(data) - set(parameters.fields)):
        errors[unknown] = [
            serializers.ErrorDetail("This job type has no such parameter.", code="unknown")
        ]
    if errors:
        raise serializers.ValidationError({"parameters": errors})
    return dict(parameters.validated_data)


MAX_BULK_JOBS = 500


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="JobCreate",
        serializers=JOB_CREATE_REQUEST.serializers,
        resource_type_field_name=None,
        many=True,
    )
)
class JobListField(ListField):
    """A list of jobs, each as POST /api/jobs/ takes it."""


class JobBulkCreateSerializer(serializers.Serializer):
    jobs = JobListField(
        child=JobCreateSerializer(),
        min_length=1,
        max_length=MAX_BULK_JOBS,
        help_text=f"1 to {MAX_BULK_JOBS} jobs, each as POST /api/jobs/ takes it. They are "
        "validated together: one invalid job refuses the whole request, with errors listed "
        "by position.",
    )


class JobSerializer(FieldsBuiltOnceMixin, serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField(help_text=WAITING_FOR_HELP)

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "description",
            "job_type",
            "parameters",
            "scheduled_time",
            "priority",
            "status",
            "waiting_for",
            "progress",
            "attempts",
            "run",
            "max_retries",
            "timeout_seconds",
            "error_message",
            "owner",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
            "expires_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=WaitingFor.choices, allow_null=True))
    def get_waiting_for(self, job: Job) -> str | None:
        # Shared by the jobs of one response (a list's items share their parent's context).
        reasons = self.context.setdefault("waiting_reasons", WaitingReasons())
        request = self.context.get("request")
        owner = request.user if request and request.user.pk == job.owner_id else job.owner
        return reasons.reason(job, owner=owner)


class JobCreatedSerializer(JobSerializer):
    callback_secret = serializers.SerializerMethodField(
        help_text="The secret that signs the deliveries to the job's callback_url; null "
        "without one. Shown only in the answer to the submission."
    )

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "callback_secret"]

    def get_callback_secret(self, job: Job) -> str | None:
        return self.context.get("callback_secrets", {}).get(job.pk)


class JobBulkCreatedSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    jobs = JobCreatedSerializer(many=True)


class JobAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobAttempt
        fields = [
            "number",
            "run",
            "worker",
            "started_at",
            "finished_at",
            "outcome",
            "error_message",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    attempt_history = JobAttemptSerializer(many=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "attempt_history"]
        read_only_fields = fields


class JobResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobResult
        fields = ["id", "job", "output", "output_bytes", "completed_at", "duration_ms"]
        read_only_fields = fields


class JobTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    max_retries = serializers.IntegerField()
    timeout_seconds = serializers.IntegerField()
    parameters_schema = serializers.SerializerMethodField()

    def get_parameters_schema(self, handler) -> dict[str, Any]:
        return serializer_json_schema(handler.Parameters())


class JobSummarySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    in_progress = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
