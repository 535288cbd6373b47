from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from job_system.openapi import request_example
from jobs.pagination import NewestFirstPagination
from webhooks.endpoints import (
    TooManyEndpoints,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
    endpoint_update,
)
from webhooks.models import DeliveryAttempt, Endpoint
from webhooks.redelivery import endpoint_redeliver
from webhooks.serializers import (
    DeliveryAttemptSerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    RedeliveredSerializer,
    RedeliverSerializer,
)


class TooManyEndpointsError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "too_many_endpoints"


ENDPOINT_EXAMPLE = {
    "url": "https://hooks.example.com/jobs",
    "description": "tell the ops channel",
    "event_types": ["job.completed", "job.failed"],
}


class DeliveryLogPagination(NewestFirstPagination):
    ordering = "-attempted_at"


@extend_schema_view(
    list=extend_schema(summary="List your webhook endpoints, newest first"),
    retrieve=extend_schema(summary="Show one of your webhook endpoints"),
    create=extend_schema(
        summary="Add a webhook endpoint",
        description="The answer carries the endpoint's signing secret, shown only this once.",
        examples=[request_example("An endpoint for finished jobs", ENDPOINT_EXAMPLE)],
        responses={
            201: EndpointWithSecretSerializer,
            409: OpenApiResponse(description="`too_many_endpoints`: delete one first."),
        },
    ),
    partial_update=extend_schema(
        summary="Change a webhook endpoint",
        examples=[
            request_example(
                "Turn it on again",
                {"enabled": True},
                "Also after the service disabled it for failing: its waiting deliveries go out.",
            )
        ],
    ),
    destroy=extend_schema(summary="Delete a webhook endpoint, its deliveries and their log"),
)
class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Endpoint.objects.none()  # The model, for the schema; see get_queryset.
    serializer_class = EndpointSerializer
    pagination_class = NewestFirstPagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Endpoint]:
        return Endpoint.objects.filter(owner=self.request.user)

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            endpoint = endpoint_create(owner=request.user, **serializer.validated_data)
        except TooManyEndpoints as exc:
            raise TooManyEndpointsError(str(exc)) from exc
        data = EndpointWithSecretSerializer(endpoint).data
        return Response(data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk=None) -> Response:
        endpoint = self.get_object()
        serializer = self.get_serializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(self.get_serializer(endpoint).data)

    def perform_destroy(self, instance: Endpoint) -> None:
        endpoint_delete(endpoint=instance)

    @extend_schema(
        summary="Give an endpoint a new signing secret",
        description="The answer carries the new secret, shown only this once. Deliveries are "
        "signed with the old secret too for 24 hours (`previous_secret_expires_at`), so the "
        "receiver can switch without losing any.",
        request=None,
        responses={200: EndpointWithSecretSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk=None) -> Response:
        endpoint = endpoint_rotate_secret(endpoint=self.get_object())
        return Response(EndpointWithSecretSerializer(endpoint).data)

    @extend_schema(
        summary="The endpoint's delivery log, newest attempt first",
        responses={200: DeliveryAttemptSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], pagination_class=DeliveryLogPagination)
    def deliveries(self, request: Request, pk=None) -> Response:
        attempts = DeliveryAttempt.objects.filter(endpoint=self.get_object()).select_related(
            "delivery__event"
        )
        page = self.paginate_queryset(attempts)
        return self.get_paginated_response(DeliveryAttemptSerializer(page, many=True).data)

    @extend_schema(
        summary="Send one event, or every event since a time, to the endpoint again",
        description="Each keeps the webhook-id it was first sent with. Events older than "
        "EVENT_RETENTION_DAYS are gone; at most 1,000 events per request.",
        request=RedeliverSerializer,
        examples=[
            request_example("One event again", {"event_id": 42}),
            request_example("Everything since a time", {"since": "2026-11-30T06:00:00Z"}),
        ],
        responses={202: RedeliveredSerializer},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk=None) -> Response:
        endpoint = self.get_object()
        serializer = RedeliverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        queued, truncated = endpoint_redeliver(
            endpoint=endpoint,
            event_seq=serializer.validated_data.get("event_id"),
            since=serializer.validated_data.get("since"),
        )
        data = RedeliveredSerializer({"queued": queued, "truncated": truncated}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
