from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from job_system.openapi import request_example
from job_system.throttling import ScopedCountingThrottle
from jobs import handlers, services
from jobs.filters import JobFilter, JobResultFilter
from jobs.models import Job, JobResult
from jobs.pagination import NewestFirstPagination, ResultPagination
from jobs.serializers import (
    JOB_CREATE_REQUEST,
    JobBulkCreatedSerializer,
    JobBulkCreateSerializer,
    JobCreatedSerializer,
    JobCreateSerializer,
    JobDetailSerializer,
    JobResultSerializer,
    JobSerializer,
    JobSummarySerializer,
    JobTypeSerializer,
)
from webhooks.selectors import callback_secrets


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The job is not in a state that allows this."
    default_code = "invalid_state"


class TooManyActiveJobsError(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_active_jobs"


class JobNotCompleted(ValidationError):
    default_code = "job_not_completed"


MAX_IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
    OpenApiParameter.HEADER,
    description="Any unique string (a UUID, say). Sending the same key and request again "
    "returns what the first request made (200) instead of creating more; the same key with "
    "a request for other jobs gets 409. Requests are compared as validated, so spelling out "
    "a default does not make another. Keys are per user, kept as long as the jobs, and belong "
    "to one request: a single submission or a whole bulk one.",
)


def idempotency_key(request: Request) -> str:
    """Return the request's Idempotency-Key, or "" if it has none."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError(
            {"Idempotency-Key": [f"At most {MAX_IDEMPOTENCY_KEY_LENGTH} characters."]},
            code="max_length",
        )
    return key


def validated_submission(request: Request, serializer_class, key: str) -> dict[str, Any]:
    """Validate a submission's body, as of its key's first request if the key was used."""
    used = bool(key) and services.idempotency_key_used(owner=request.user, idempotency_key=key)
    serializer = serializer_class(data=request.data, context={"idempotency_key_used": used})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@contextmanager
def submission_errors() -> Iterator[None]:
    """Answer a reused Idempotency-Key with 409 and a full active-job cap with 429."""
    try:
        yield
    except services.IdempotencyConflict as exc:
        raise Conflict(str(exc), code="idempotency_key_reused") from exc
    except services.TooManyActiveJobs as exc:
        raise TooManyActiveJobsError(str(exc)) from exc


def _callback_secrets(jobs: list[Job], *, asked: bool) -> dict[str, Any]:
    """The serializer context that shows each job's callback secret, if the request set any."""
    return {"callback_secrets": callback_secrets([job.pk for job in jobs]) if asked else {}}


def _state_change(change, job: Job) -> Response:
    try:
        job = change(job=job)
    except services.JobStateError as exc:
        raise Conflict(str(exc)) from exc
    except Job.DoesNotExist as exc:
        raise NotFound from exc  # The pruner deleted it since the request found it.
    return Response(JobDetailSerializer(job).data)


# An echo job first: it is the one Swagger UI pre-fills, and it finishes at once.
ECHO_JOB = {"name": "say hello", "job_type": "echo", "parameters": {"message": "hello"}}
JOB_EXAMPLES = [
    request_example("An echo job that runs now", ECHO_JOB),
    request_example(
        "A sleep job to try cancel and retry on",
        {"name": "take a nap", "job_type": "sleep", "parameters": {"seconds": 30}},
        "Runs for 30 seconds, on the `long` queue.",
    ),
]
_conflict = OpenApiResponse(description="`invalid_state`: the job's state does not allow this.")
_too_many = OpenApiResponse(
    description="`throttled`: too many requests; or `too_many_active_jobs`: wait for some of "
    "your jobs to finish."
)
_key_reused = OpenApiResponse(
    description="`idempotency_key_reused`: the Idempotency-Key came with a request for other jobs."
)


@extend_schema_view(
    list=extend_schema(summary="List your jobs, newest first"),
    retrieve=extend_schema(summary="Show one of your jobs"),
    destroy=extend_schema(
        summary="Cancel a pending or running job (same as POST .../cancel/)",
        description="Cancels; it does not delete. The job stays readable, `cancelled`.",
        responses={200: JobDetailSerializer, 409: _conflict},
    ),
)
class JobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Job.objects.none()  # Tells the schema generator the model; see get_queryset.
    # Any one path segment reaches the view, so a malformed id gets the API's JSON 404 rather
    # than Django's HTML page.
    lookup_value_regex = "[^/]+"
    filterset_class = JobFilter
    ordering_fields = ["created_at", "name"]
    pagination_class = NewestFirstPagination
    throttle_scope = "job_create"

    def get_queryset(self):
        jobs = Job.objects.owned_by(self.request.user)
        return jobs.prefetch_related("attempt_log") if self.action == "retrieve" else jobs

    def get_throttles(self):
        return [ScopedCountingThrottle()] if self.action in ("create", "bulk") else []

    def get_serializer_class(self):
        return JobDetailSerializer if self.action == "retrieve" else JobSerializer

    @extend_schema(
        summary="Submit a job",
        request=JOB_CREATE_REQUEST,
        examples=JOB_EXAMPLES,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: JobCreatedSerializer,
            200: OpenApiResponse(
                JobCreatedSerializer, "The job an earlier identical request made."
            ),
            409: _key_reused,
            429: _too_many,
        },
    )
    def create(self, request: Request) -> Response:
        key = idempotency_key(request)
        fields = validated_submission(request, JobCreateSerializer, key)
        with submission_errors():
            job, created = services.job_create(owner=request.user, idempotency_key=key, **fields)
        context = _callback_secrets([job], asked=bool(fields.get("callback_url")))
        return Response(
            JobCreatedSerializer(job, context=context).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def destroy(self, request: Request, pk=None) -> Response:
        return _state_change(services.job_cancel, self.get_object())

    @extend_schema(
        summary="Cancel a pending or running job",
        request=None,
        responses={200: JobDetailSerializer, 409: _conflict},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return _state_change(services.job_cancel, self.get_object())

    @extend_schema(
        summary="Queue a failed or cancelled job again",
        request=None,
        responses={200: JobDetailSerializer, 409: _conflict, 429: _too_many},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk=None) -> Response:
        with submission_errors():
            return _state_change(services.job_retry, self.get_object())

    @extend_schema(
        summary="Show a completed job's result",
        responses={
            200: JobResultSerializer,
            400: OpenApiResponse(
                description="`job_not_completed`: the job has no result yet, or will not have "
                "one; `status` says which."
            ),
        },
    )
    @action(detail=True, methods=["get"])
    def result(self, request: Request, pk=None) -> Response:
        job = self.get_object()
        if job.status != Job.Status.COMPLETED:
            raise JobNotCompleted(
                {
                    "detail": f"The job is {job.status}; only completed jobs have a result.",
                    "status": job.status,
                }
            )
        return Response(JobResultSerializer(job.result).data)

    @extend_schema(
        summary="Submit up to 500 jobs in one request",
        description="All or nothing: the jobs are validated together and stored in one "
        "transaction, then the due ones are published together. An Idempotency-Key covers "
        "the whole batch.",
        request=JobBulkCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        examples=[
            request_example(
                "Two jobs",
                {
                    "jobs": [
                        ECHO_JOB,
                        {
                            "name": "count words",
                            "job_type": "word_count",
                            "parameters": {"text": "the quick brown fox jumps over the lazy dog"},
                        },
                    ]
                },
            )
        ],
        responses={
            201: JobBulkCreatedSerializer,
            200: OpenApiResponse(
                JobBulkCreatedSerializer,
                "The jobs an earlier identical request made, in the same order.",
            ),
            409: _key_reused,
            429: _too_many,
        },
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        key = idempotency_key(request)
        specs = validated_submission(request, JobBulkCreateSerializer, key)["jobs"]
        with submission_errors():
            jobs, created = services.jobs_create_bulk(
                owner=request.user, specs=specs, idempotency_key=key
            )
        context = _callback_secrets(jobs, asked=any(spec.get("callback_url") for spec in specs))
        body = {
            "count": len(jobs),
            "jobs": JobCreatedSerializer(jobs, many=True, context=context).data,
        }
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(summary="Count your jobs by status", responses=JobSummarySerializer)
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def summary(self, request: Request) -> Response:
        return Response(self.get_queryset().status_counts())


@extend_schema_view(
    list=extend_schema(
        summary="List the results of your completed jobs",
        description="Newest first. A page holds up to `page_size` results and at most "
        f"{ResultPagination.max_page_bytes // 2**20} MiB of outputs: where larger outputs "
        "would pass that, the page ends early, so follow `next` until it is null. "
        "`output_bytes` gives each output's size; an output larger than a whole page is "
        "listed as null, and `GET /api/job-results/{id}/` returns it.",
    ),
    retrieve=extend_schema(summary="Show one result"),
)
class JobResultViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = JobResult.objects.none()
    lookup_value_regex = JobViewSet.lookup_value_regex
    serializer_class = JobResultSerializer
    filterset_class = JobResultFilter
    # Always newest first: no OrderingFilter here.
    filter_backends = [DjangoFilterBackend]
    pagination_class = ResultPagination

    def get_queryset(self):
        return JobResult.objects.owned_by(self.request.user)


class JobTypeListView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        summary="List the job types and the parameters each accepts",
        responses=JobTypeSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response(JobTypeSerializer(handlers.all_handlers(), many=True).data)
