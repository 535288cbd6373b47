"""README's few lines that verify a delivery work on a real delivery, and only on it."""

import re

import pytest
from django.conf import settings

from webhooks import delivery, fanout

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback_allowed")]


def readme_verify():
    readme = (settings.BASE_DIR / "README.md").read_text()
    code = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", readme, re.DOTALL)[1]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own README, the code a reader copies
    return namespace["verify"]


def test_readmes_verification_accepts_a_delivery_and_refuses_a_forgery(
    verified_user, receiver, endpoint_for, finished_job
):
    verify = readme_verify()
    endpoint = endpoint_for(receiver.url)
    finished_job()
    for endpoint_id in fanout.webhooks_fan_out(owner_id=verified_user.pk):
        delivery.webhooks_deliver(endpoint_id=endpoint_id)

    [received] = receiver.received
    assert verify(endpoint.secret, received.headers, received.body)
    assert not verify(endpoint.secret, received.headers, received.body + b" ")
    assert not verify("whsec_" + "A" * 44, received.headers, received.body)
    stale = {**received.headers, "webhook-timestamp": "1614265330"}
    assert not verify(endpoint.secret, stale, received.body)
