"""A web process SIGKILLed while its publisher holds a committed job's message.

The client got its 201; the job is admitted, and its message died with the process. The
reaper's audit of the broker publishes it again once JOB_MESSAGE_GRACE has passed, rather than
after JOB_REDISPATCH_AFTER, and it runs exactly once.
"""

import pytest

from jobs import queue, services
from jobs.models import Job, JobAttempt, JobResult
from jobs.services.admission import queue_names
from jobs.tests.live import subprocess_env, wait_for
from scripts import localredis
from scripts.stack import Api, procfile_process

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(tmp_path):
    """The Procfile's gunicorn on the test database, whose publisher holds messages for 1 s.

    Idle, the publisher sends a job's message at once, then waits the interval (at most 1 s)
    before the next send: the jobs submitted in that wait are held.
    """
    port = localredis.free_port()
    env = subprocess_env(PORT=str(port), WEB_CONCURRENCY="1", JOB_PUBLISH_INTERVAL_SECONDS="1")
    process = procfile_process("web", env, tmp_path).start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return Api(url).request("GET", "/api/health/live/")[0] == 200
        except OSError:
            return False

    wait_for(answers, timeout=60, message=f"gunicorn did not start\n{process.log_tail()}")
    yield process, url
    process.stop()


def test_a_job_whose_web_process_was_killed_before_publishing_runs_once_soon(
    web, live_worker, verified_user, password
):
    process, url = web
    status, body = Api(url).request(
        "POST", "/api/login/", {"email": verified_user.email, "password": password}
    )
    assert status == 200, body
    api = Api(url, body["access"])
    submission = {"name": "held", "job_type": "echo", "parameters": {"message": "hi"}}
    # The first is published at once; the next ones, a few milliseconds later, are held.
    answers = [api.request("POST", "/api/jobs/", submission) for _ in range(4)]
    assert [status for status, _job in answers] == [201] * 4

    process.kill()  # SIGKILL: its publisher thread dies holding the later jobs' messages

    ids = [job["id"] for _status, job in answers]
    in_broker = {str(job_id) for m in queue.broker_messages(queue_names()) for job_id in m.job_ids}
    # Admitted in their requests, still waiting, and with no message anywhere.
    waiting = Job.objects.filter(pk__in=ids, status=Job.Status.PENDING, enqueued_at__isnull=False)
    held = {str(pk) for pk in waiting.values_list("pk", flat=True)} - in_broker
    assert held, "every message went out before the kill"

    # As Beat's reaper would, round after round, until each held job was published again.
    republished = []
    wait_for(
        lambda: (
            republished.append(services.jobs_reap_stale()["republished"])
            or sum(republished) >= len(held)
        ),
        timeout=30,
    )

    for job_id in ids:
        job = wait_for(
            lambda job_id=job_id: Job.objects.filter(
                pk=job_id, status=Job.Status.COMPLETED
            ).first(),
            timeout=60,
            message=f"job {job_id} did not run",
        )
        outcomes = list(job.attempt_log.values_list("outcome", flat=True))
        assert outcomes == [JobAttempt.Outcome.SUCCEEDED]
        assert JobResult.objects.filter(job=job).count() == 1
    assert services.jobs_reap_stale()["republished"] == 0
