import json
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from job_system.celery import app as celery_app
from users import tasks
from users.models import EmailCode

pytestmark = pytest.mark.django_db


def test_send_email_sends_plain_text_from_the_default_sender(mailoutbox):
    tasks.send_email("ada@example.com", "Hello", "Body text")

    [message] = mailoutbox
    assert (message.from_email, message.to) == (settings.DEFAULT_FROM_EMAIL, ["ada@example.com"])
    assert (message.subject, message.body) == ("Hello", "Body text")


def test_email_message_survives_json_and_keeps_the_code_out_of_logs(
    monkeypatch, api_client, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(tasks.send_email, "apply_async", lambda **options: sent.append(options))
    with django_capture_on_commit_callbacks(execute=True):
        api_client.post(
            reverse("users:register"),
            {"email": "ada@example.com", "password": "plum-orchard-lantern-93"},
        )

    [options] = sent
    assert json.loads(json.dumps(options["args"])) == list(options["args"])
    assert options["args"][2] not in options["argsrepr"]


def test_purge_expired_codes_deletes_day_old_codes(unverified_user):
    now = timezone.now()
    EmailCode.objects.create(
        user=unverified_user, purpose="verify_email", code_hash="x", expires_at=now
    )

    with time_machine.travel(now + timedelta(days=1, seconds=1)):
        assert tasks.purge_expired_codes() == 1


def test_flush_expired_tokens_drops_expired_refresh_tokens(verified_user):
    RefreshToken.for_user(verified_user)

    with time_machine.travel(timezone.now() + settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]):
        tasks.flush_expired_tokens()

    assert not OutstandingToken.objects.exists()


def test_flush_expired_tokens_drops_expired_blacklist_rows_and_keeps_live_tokens(verified_user):
    RefreshToken.for_user(verified_user).blacklist()
    lifetime = settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]

    with time_machine.travel(timezone.now() + lifetime):
        live = RefreshToken.for_user(verified_user)
        tasks.flush_expired_tokens()

    assert list(OutstandingToken.objects.values_list("jti", flat=True)) == [live["jti"]]
    assert not BlacklistedToken.objects.exists()


def test_beat_schedule_names_registered_user_tasks():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    user_tasks = {name for name in scheduled if name.startswith("users.")}

    assert user_tasks == {"users.tasks.purge_expired_codes", "users.tasks.flush_expired_tokens"}
    assert user_tasks <= set(celery_app.tasks)
