"""A real gunicorn while its real PostgreSQL stops and starts again.

The server is a private one (scripts.pgcluster), never the machine's shared server, which
other test runs use. These tests skip only where no PostgreSQL server binaries are installed.
"""

import http.client
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest

from jobs.tests.live import subprocess_env, wait_for
from scripts import localredis, pgcluster
from scripts.stack import ROOT, ManagedProcess, procfile_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not pgcluster.available(),
        reason="no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin",
    ),
]

PASSWORD = "outage-password-1"


@dataclass
class Web:
    cluster: pgcluster.PrivateCluster
    process: ManagedProcess
    port: int
    email: str
    database_url: str

    def request(
        self, method: str, path: str, body: object = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], object]:
        """One request on a fresh connection; (status, headers, decoded JSON or text)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                method,
                path,
                None if body is None else json.dumps(body),
                {"Content-Type": "application/json", **(headers or {})},
            )
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, dict(response.getheaders()), data

    def token(self) -> str:
        status, _headers, body = self.request(
            "POST", "/api/login/", {"email": self.email, "password": PASSWORD}
        )
        assert status == 200, body
        return body["access"]

    def jobs_with_key(self, key: str) -> int:
        """How many jobs the database holds under this Idempotency-Key, read with psql."""
        statement = f"SELECT count(*) FROM jobs_job WHERE idempotency_key = '{key}'"  # noqa: S608
        output = subprocess.run(  # noqa: S603 - our own command line.
            [str(self.cluster.bin_dir / "psql"), self.database_url, "-At", "-c", statement],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(output)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """gunicorn (the Procfile's web line, 4 threads) on a private PostgreSQL, with a user."""
    workdir = tmp_path_factory.mktemp("outage")
    with pgcluster.PrivateCluster() as cluster:
        database_url = cluster.create_database("outage")
        port = localredis.free_port()
        env = subprocess_env()
        env.update(
            DATABASE_URL=database_url,
            ENV_FILE="/dev/null",
            DEBUG="false",
            PORT=str(port),
            WEB_CONCURRENCY="1",
            WEB_THREADS="4",
            # Every request reads its user, so each one meets the database.
            AUTH_USER_CACHE_SECONDS="0",
        )
        email = f"outage-{uuid.uuid4().hex[:8]}@example.com"
        _manage(env, "migrate", "--noinput")
        _manage(
            env,
            "shell",
            "-c",
            "from users.models import CustomUser; "
            f"CustomUser.objects.create_user({email!r}, {PASSWORD!r}, is_verified=True)",
        )
        process = procfile_process("web", env, workdir).start()
        try:
            server = Web(cluster, process, port, email, database_url)

            def answers() -> bool:
                try:
                    return server.request("GET", "/api/health/live/")[0] == 200
                except OSError:
                    return False

            wait_for(answers, timeout=60, message=f"gunicorn did not start\n{process.log_tail()}")
            yield server
        finally:
            process.stop()
            assert "Traceback" not in process.log_path.read_text(), process.log_tail()


def _manage(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "manage.py", *args]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)  # noqa: S603


def test_every_kind_of_route_answers_503_with_retry_after_while_the_database_is_down(web):
    token = {"Authorization": f"Bearer {web.token()}"}
    web.cluster.stop()
    try:
        requests = {
            "DRF list": ("GET", "/api/jobs/", None, token),
            "DRF create": ("POST", "/api/jobs/", {"name": "x", "parameters": {}}, token),
            "DRF without a login": (
                "POST",
                "/api/login/",
                {"email": web.email, "password": PASSWORD},
                {},
            ),
            # The admin, a plain Django view: its session is read from the database.
            "admin": ("GET", "/admin/", None, {"Cookie": "sessionid=abcdefghijklmnop1234"}),
        }
        for name, (method, path, body, headers) in requests.items():
            status, answer_headers, answer = web.request(method, path, body, headers)
            assert status == 503, (name, status, answer)
            assert answer_headers["Retry-After"] == "5", name
            assert answer["code"] == "database_unavailable", name
        status, _headers, health = web.request("GET", "/api/health/")
        assert status == 503
        assert health["database"].startswith("error")
    finally:
        web.cluster.start()
    # The first request after the database is back succeeds, on any thread.
    assert web.request("GET", "/api/jobs/", headers=token)[0] == 200
    # Readiness reuses its last answer for a second (READINESS_CACHE_SECONDS), then says so.
    wait_for(
        lambda: web.request("GET", "/api/health/")[2]["database"] == "ok",
        timeout=10,
        message="readiness still says the database is down",
    )


def test_the_first_requests_after_a_database_restart_succeed_on_stale_connections(web):
    token = {"Authorization": f"Bearer {web.token()}"}
    # Requests at once, so that each of the 4 threads keeps a connection (DB_CONN_MAX_AGE).
    for _ in range(8):
        assert web.request("GET", "/api/jobs/", headers=token)[0] == 200
    web.cluster.restart()
    # Each thread's connection was cut by the restart: its health check must notice, not the
    # request.
    statuses = [web.request("GET", "/api/jobs/", headers=token)[0] for _ in range(12)]
    assert statuses == [200] * 12


def test_a_client_whose_submission_failed_while_the_database_was_down_retries_into_one_job(web):
    token = {"Authorization": f"Bearer {web.token()}"}
    key = f"outage-{uuid.uuid4()}"
    submission = {"name": "retried", "job_type": "echo", "parameters": {"message": "hi"}}
    headers = {**token, "Idempotency-Key": key}
    web.cluster.stop()
    try:
        status, _headers, _body = web.request("POST", "/api/jobs/", submission, headers)
        assert status == 503
    finally:
        web.cluster.start()
    first, _headers, created = web.request("POST", "/api/jobs/", submission, headers)
    again, _headers, replayed = web.request("POST", "/api/jobs/", submission, headers)
    assert (first, again) == (201, 200)
    assert created["id"] == replayed["id"]
    assert web.jobs_with_key(key) == 1


def test_beat_started_while_the_database_is_down_waits_for_it_then_sends_its_tasks(web, tmp_path):
    env = {**subprocess_env(), "DATABASE_URL": web.database_url, "ENV_FILE": "/dev/null"}
    web.cluster.stop()
    beat = procfile_process("beat", env, tmp_path)
    try:
        beat.start()
        wait_for(
            lambda: "database unavailable" in beat.log_path.read_text(),
            timeout=60,
            message=f"Beat did not say it waits\n{beat.log_tail()}",
        )
        # It waits, and does not exit: a supervisor such as honcho would stop everything.
        assert beat.alive, beat.log_tail()
    finally:
        web.cluster.start()
    try:
        wait_for(
            # Every 10 s, and logged (the every-second sends are not).
            lambda: "Sending due task prune-expired-jobs" in beat.log_path.read_text(),
            timeout=60,
            message=f"Beat sent nothing after the database came back\n{beat.log_tail()}",
        )
    finally:
        beat.stop()
    assert "Traceback" not in beat.log_path.read_text(), beat.log_tail()
