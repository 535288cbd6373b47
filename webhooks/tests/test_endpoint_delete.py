"""Deleting an endpoint while workers add deliveries and attempts under it.

Django deletes an endpoint's deliveries and attempts as it collected them, then the endpoint.
A row that another process added in between made the delete's commit fail (a 500 to the
owner, as the fuzzer found on PostgreSQL). Each test adds that row from another connection at
that very moment: once the delete has collected, as its pre_delete signal fires.
"""

from functools import partial

import pytest

from jobs.tests.concurrency import admin_delete, racing_the_delete
from webhooks import delivery, fanout
from webhooks.endpoints import endpoint_delete
from webhooks.models import Delivery, DeliveryAttempt, Endpoint
from webhooks.redelivery import endpoint_redeliver

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_allowed"),
]


def test_an_attempt_recorded_as_the_endpoint_is_deleted_does_not_fail_the_delete(
    verified_user, receiver, endpoint_for, finished_job
):
    endpoint = endpoint_for(receiver.url)
    finished_job()
    fanout.webhooks_fan_out(owner_id=verified_user.pk)
    pending = Delivery.objects.select_related("event", "endpoint").get()

    with racing_the_delete(Endpoint, lambda: delivery.attempt(pending)) as outcome:
        endpoint_delete(endpoint=endpoint)

    assert outcome == [False]  # The endpoint was gone when it came to record the attempt.
    assert not Endpoint.objects.exists()
    assert not Delivery.objects.exists()
    assert not DeliveryAttempt.objects.exists()


def test_a_fan_out_as_the_endpoint_is_deleted_does_not_fail_the_delete(
    verified_user, receiver, endpoint_for, finished_job
):
    endpoint = endpoint_for(receiver.url)
    kept = endpoint_for(receiver.url)
    finished_job()

    with racing_the_delete(
        Endpoint, lambda: fanout.webhooks_fan_out(owner_id=verified_user.pk)
    ) as outcome:
        endpoint_delete(endpoint=endpoint)

    # Made again without the deleted endpoint, once it was gone.
    assert outcome == [{kept.pk}]
    assert list(Endpoint.objects.all()) == [kept]
    assert Delivery.objects.get().endpoint_id == kept.pk


def test_a_redelivery_asked_as_the_endpoint_is_deleted_sends_nothing(
    verified_user, receiver, endpoint_for, finished_job
):
    endpoint = endpoint_for(receiver.url)
    finished_job()
    redeliver_all = partial(endpoint_redeliver, endpoint=endpoint, since=endpoint.created_at)

    with racing_the_delete(Endpoint, redeliver_all) as outcome:
        endpoint_delete(endpoint=endpoint)

    assert outcome == [(0, False)]
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("how", ["delete page", "delete_selected action"])
def test_staff_delete_an_endpoint_in_the_admin_as_safely(
    client, user_factory, verified_user, receiver, endpoint_for, finished_job, how
):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    endpoint = endpoint_for(receiver.url)
    finished_job()

    with racing_the_delete(
        Endpoint, lambda: fanout.webhooks_fan_out(owner_id=verified_user.pk)
    ) as outcome:
        response = admin_delete(client, "/admin/webhooks/endpoint/", endpoint.pk, how)

    assert response.status_code == 302
    assert outcome == [set()]
    assert not Endpoint.objects.exists()
    assert not Delivery.objects.exists()
