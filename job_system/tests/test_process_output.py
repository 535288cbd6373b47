"""What real worker and Beat processes print: an email as one block, no line per Beat tick."""

import re
import uuid

import pytest

from jobs.models import Job
from jobs.tests.live import start_worker, wait_for
from users.tasks import send_email

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def test_a_development_email_is_one_block_in_the_worker_log(celery_log_dir):
    queue = f"mail-{uuid.uuid4().hex[:8]}"
    console = {"EMAIL_BACKEND": "job_system.mail.ConsoleEmailBackend"}
    worker = start_worker("mailer", celery_log_dir, queues=queue, env=console)
    try:
        send_email.apply_async(
            ("ada@example.com", "Your code", "Your code is 930852."), queue=queue
        )
        log = wait_for(
            lambda: "930852" in (text := worker.log_path.read_text()) and text, timeout=30
        )
    finally:
        worker.stop()

    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if "INFO job_system.mail email to" in line)
    block = lines[start : lines.index("Your code is 930852.") + 1]
    assert block[0].endswith(" INFO job_system.mail email to ada@example.com")
    assert "Subject: Your code" in block
    assert not [line for line in block[1:] if LOG_LINE.match(line)]
    assert "celery.redirected" not in log
    assert "-" * 79 not in log


def test_beat_prints_no_line_per_dispatch_and_the_dispatcher_what_it_published(
    live_worker, live_housekeeping, live_beat, job_factory
):
    probe = job_factory(enqueued_at=None)  # due, without a message: the dispatcher sends it

    wait_for(
        lambda: Job.objects.filter(pk=probe.pk, status=Job.Status.COMPLETED).exists(),
        timeout=30,
        message="the dispatcher did not admit the job",
    )

    beat_log = live_beat.log_path.read_text()
    assert "beat: Starting..." in beat_log
    for every_second in ("dispatch-due-jobs", "dispatch-due-schedules", "webhooks-send-due"):
        assert f"Sending due task {every_second}" not in beat_log
    dispatcher_log = live_housekeeping.log_path.read_text()
    assert re.search(r"INFO \S+ dispatcher admitted \d+ job", dispatcher_log)
