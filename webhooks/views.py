from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

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


class DeliveryLogPagination(NewestFirstPagination):
    ordering = "-attempted_at"


@extend_schema_view(
    list=extend_schema(summary="List your webhook endpoints, newest first"),
    retrieve=extend_schema(summary="Show one of your webhook endpoints"),
    create=extend_schema(
        summary="Add a webhook endpoint",
        description="The answer carries the endpoint's signing secret, shown only this once.",
        responses={
            201: EndpointWithSecretSerializer,
            409: OpenApiResponse(description="`too_many_endpoints`: delete one first."),
        },
    ),
    partial_update=extend_schema(summary="Change a webhook endpoint"),
    destroy=extend_schema(summary="Delete a webhook endpoint, its deliveries and their log"),
)
class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Endpoint.objects.none()  # The model, for the schema; see get_queryset.
    serializer_class = EndpointSerializer
    pagination_class = NewestFirstPagination
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

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

    def perform_update(self, serializer) -> None:
        serializer.instance = endpoint_update(
            endpoint=serializer.instance, **serializer.validated_data
        )

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
        responses={202: RedeliveredSerializer},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk=None) -> Response:
        serializer = RedeliverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        queued, truncated = endpoint_redeliver(
            endpoint=self.get_object(),
            event_seq=serializer.validated_data.get("event_id"),
            since=serializer.validated_data.get("since"),
        )
        data = RedeliveredSerializer({"queued": queued, "truncated": truncated}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
