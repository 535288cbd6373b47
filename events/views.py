"""GET /api/events/: who may open a stream, from where, and where the web server sends it.

The stream itself is served by the events process (events.stream), which checks a request
through EventStreamOpeningView below, in a thread: the same authentication, permission and
validation as every other endpoint, and the same error bodies. The web server checks the
request the same way, then answers 421 and says where streams are served, so a client that
reached it by mistake learns why, and the route is in the schema with the rest of the API.
"""

from dataclasses import asdict, dataclass
from typing import Any

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.models import Job

# Event numbers are PostgreSQL bigints: a larger position would fail the query, not match.
MAX_EVENT_ID = 2**63 - 1
LAST_EVENT_ID = "Last-Event-ID"


class EventStreamQuery(serializers.Serializer):
    job = serializers.UUIDField(
        required=False, help_text="Only this job's events. It must be one of yours (else 404)."
    )
    after = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_EVENT_ID,
        help_text="Start after this event's `id`, as `Last-Event-ID` does; 0, the default, "
        "starts from your oldest retained event. `Last-Event-ID` wins when both are sent.",
    )


@dataclass(frozen=True)
class StreamOpening:
    """A stream that may open: whose, which job's, after which event, until when."""

    owner_id: int
    job_id: str | None
    after: int
    # The access token's `exp`: the stream ends then, and the client reconnects with a fresh one.
    token_expires_at: int


def stream_opening(request: Request) -> StreamOpening:
    """Check a stream's query and Last-Event-ID against the caller; raise 400 or 404."""
    data: dict[str, Any] = {"job": request.query_params.get("job")}
    header = request.headers.get(LAST_EVENT_ID)
    # An EventSource reconnects with the URL it started with and the last id it saw in the
    # header, so the header is the newer position.
    data["after"] = header if header is not None else request.query_params.get("after")
    query = EventStreamQuery(data={key: value for key, value in data.items() if value is not None})
    if not query.is_valid():
        errors = dict(query.errors)
        if header is not None and "after" in errors:
            errors[LAST_EVENT_ID] = errors.pop("after")
        raise ValidationError(errors)
    # The header wins, but a bad ?after= beside it is still refused: it is bad input.
    if header is not None and "after" in request.query_params:
        alone = EventStreamQuery(data={"after": request.query_params.get("after")})
        if not alone.is_valid():
            raise ValidationError(dict(alone.errors))
    job_id = query.validated_data.get("job")
    if job_id is not None and not Job.objects.owned_by(request.user).filter(pk=job_id).exists():
        raise Http404
    return StreamOpening(
        owner_id=request.user.pk,
        job_id=None if job_id is None else str(job_id),
        after=query.validated_data.get("after", 0),
        token_expires_at=int(request.auth["exp"]),
    )


STREAM_DESCRIPTION = """\
Server-Sent Events (`text/event-stream`): every change of your jobs as it happens, served by
the **events process**, not the web server (a reverse proxy routes `/api/events/` to it; the
web server answers 421 after checking the request). Each event has `id: <number>` (1, 2, 3,
... over your events), `event: <type>` (`job.pending`, `job.started`, `job.progress`,
`job.completed`, `job.failed`, `job.cancelled`) and `data: <JSON>`
(`{"id", "type", "timestamp", "data": {"job": {...}}}`).

Reconnect with `Last-Event-ID` (or `?after=`) to get exactly the events you missed. A position
older than the retained events, or beyond your last event, first gets `event: stream.reset`
(`{"reason": "events_expired"}` or `{"reason": "unknown_event_id"}`): re-read your jobs, then
the stream goes on from the oldest retained event, or from your latest. A comment line
(`: keep-alive`) comes every `EVENT_STREAM_KEEPALIVE_SECONDS`. The stream ends with
`event: stream.end` (`{"reason": "token_expired"}`) when the access token expires: reconnect
with a fresh one and `Last-Event-ID`."""

_sse = OpenApiResponse(
    OpenApiTypes.STR,
    description="The stream, in `text/event-stream` (from the events process only).",
)
_misdirected = OpenApiResponse(
    description="`misdirected_request`: the request is valid, but streams are served by the "
    "events process (the Procfile's `events`); route `/api/events/` to it."
)
_too_many_streams = OpenApiResponse(
    description="`too_many_streams`: you have `EVENT_STREAMS_PER_USER` streams open already "
    "(events process only)."
)
_process_full = OpenApiResponse(
    description="`streams_full`: this events process holds `EVENT_STREAMS_PER_PROCESS` "
    "streams; retry after `Retry-After` seconds (events process only)."
)


class EventStreamOpeningView(APIView):
    """Authenticate and check a stream's request; answer with where it starts.

    Not routed: the events process calls it for each new stream, in a thread.
    """

    schema = None

    def get(self, request: Request) -> Response:
        return Response(asdict(stream_opening(request)))


class EventStreamView(APIView):
    """On the web server, check a stream's request, then say that another process serves it."""

    @extend_schema(
        tags=["events"],
        operation_id="events_stream",
        summary="Stream your jobs' events (Server-Sent Events)",
        description=STREAM_DESCRIPTION,
        parameters=[
            EventStreamQuery,
            OpenApiParameter(
                LAST_EVENT_ID,
                {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
                OpenApiParameter.HEADER,
                description="The `id` of the last event you received: the stream resumes "
                "after it. Browsers' EventSource sends it when they reconnect.",
            ),
        ],
        responses={
            (200, "text/event-stream"): _sse,
            404: OpenApiResponse(description="`not_found`: `job` is not one of your jobs."),
            421: _misdirected,
            429: _too_many_streams,
            503: _process_full,
        },
    )
    def get(self, request: Request) -> Response:
        stream_opening(request)
        return Response(
            {
                "detail": "Event streams are served by the events process, not by this web "
                "server. Send /api/events/ to it (the Procfile's `events`, port EVENTS_PORT): "
                "a reverse proxy routes the path there, with buffering off (see README, Events).",
                "code": "misdirected_request",
            },
            status=status.HTTP_421_MISDIRECTED_REQUEST,
        )
