"""A Python client generated from the live schema does what a client user needs.

openapi-python-client, the common Python generator, builds a client from /api/schema/ as
served, offline. The test imports it and, against a live server and a real worker, registers,
confirms the emailed code, logs in, submits one job of every job type, waits for each to
finish, reads each result, and logs out: all through the generated code.
"""

import hashlib
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
from openapi_schema_validator import OAS30Validator

from job_system.tests.test_openapi import component
from job_system.tests.test_workflow import emailed_code
from jobs.tests.live import wait_for
from scripts.stack import Api

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PACKAGE = "generated_jobs_client"
PASSWORD = "a sturdy passphrase 4 clients"
TERMINAL = {"completed", "failed", "cancelled"}
# Runs the generator's command line with every attempt to reach the network refused: a
# generator that downloads something cannot work where our users build clients offline.
GENERATE_OFFLINE = """
import sys

def refuse_network(event, args):
    if event in {"socket.connect", "socket.getaddrinfo"}:
        raise RuntimeError(f"the generator reached for the network: {event} {args}")

sys.addaudithook(refuse_network)
from openapi_python_client.cli import app

app(prog_name="openapi-python-client")
"""

# Valid parameters for each job type (checked against the schema below), and what its
# result must hold. A new job type fails the test until it has a line here.
PARAMETERS = {
    "checksum": {"text": "abc", "algorithm": "sha256"},
    "csv_summary": {"csv": "city,people\nOslo,700\nBergen,290\n"},
    "echo": {"message": "hello", "data": [1, {"two": 2}]},
    "fail": {"message": "Failed on purpose.", "retryable": False},
    "primes": {"limit": 30},
    "sleep": {"seconds": 0.2},
    "word_count": {"text": "the quick brown fox jumps over the lazy dog"},
}
OUTPUTS = {
    "checksum": lambda output: output["hexdigest"] == hashlib.sha256(b"abc").hexdigest(),
    "csv_summary": lambda output: output["rows"] == 2,
    "echo": lambda output: output == {"message": "hello", "data": [1, {"two": 2}]},
    "primes": lambda output: output["count"] == 10,
    "sleep": lambda output: output["slept_seconds"] >= 0.2,
    "word_count": lambda output: output["words"] == 9,
}


@pytest.fixture
def schema(live_server) -> dict:
    status, document = Api(live_server.url).request("GET", "/api/schema/?format=json")
    assert status == 200
    return document


@pytest.fixture
def generated(schema, tmp_path) -> Iterator[ModuleType]:
    """Generate a client from the served schema into a temporary folder, and import it."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    config = tmp_path / "generator.yml"
    config.write_text("post_hooks: []\n")  # No formatter run over the generated code.
    generation = subprocess.run(  # noqa: S603 - our own command line.
        [
            sys.executable,
            "-c",
            GENERATE_OFFLINE,
            "generate",
            "--meta=none",
            f"--path={schema_file}",
            f"--output-path={tmp_path / PACKAGE}",
            f"--config={config}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generation.returncode == 0, generation.stdout + generation.stderr
    # A part of the schema the generator cannot read is left out, with only a warning.
    assert "Warning" not in generation.stderr, generation.stderr

    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def public(generated, live_server) -> Iterator:
    # Closed at the end: the live server's thread for a kept-alive connection would otherwise
    # hold a database session, and the test database could not be dropped.
    with generated.Client(base_url=live_server.url, raise_on_unexpected_status=True) as client:
        yield client


def module(package: ModuleType, name: str) -> ModuleType:
    return importlib.import_module(f"{package.__name__}.{name}")


def job_create_components(schema: dict) -> dict[str, tuple[str, str]]:
    """Map each job type to the names of its request body's and its parameters' components."""
    body = schema["paths"]["/api/jobs/"]["post"]["requestBody"]["content"]["application/json"]
    components = {}
    for ref in component(schema, body["schema"])["oneOf"]:
        properties = component(schema, ref)["properties"]
        job_type = properties["job_type"].get("allOf", [properties["job_type"]])[0]
        (name,) = component(schema, job_type)["enum"]
        parameters = properties["parameters"]["allOf"][0]
        components[name] = (ref["$ref"].rsplit("/", 1)[1], parameters["$ref"].rsplit("/", 1)[1])
    return components


def sign_up(generated: ModuleType, public, mailbox: Path):
    """Register, confirm the emailed code and log in through the generated client."""
    models = module(generated, "models")
    email = f"client-{uuid.uuid4().hex[:8]}@example.com"
    registered = module(generated, "api.accounts.register_create").sync_detailed(
        client=public, body=models.RegisterRequest(email=email, password=PASSWORD)
    )
    assert registered.status_code == 201, registered.content
    verified = module(generated, "api.accounts.verify_otp_create").sync_detailed(
        client=public,
        body=models.VerifyOtpRequest(email=email, otp=emailed_code(mailbox, email)),
    )
    assert verified.status_code == 200, verified.content
    tokens = module(generated, "api.accounts.login_create").sync(
        client=public, body=models.LoginRequest(email=email, password=PASSWORD)
    )
    assert isinstance(tokens, models.TokenPair), tokens
    return tokens


def finished(retrieve: ModuleType, job_id: str, client):
    """Return the job once it is in a terminal state, else None."""
    job = retrieve.sync(job_id, client=client)
    return job if job.status in TERMINAL else None


def submit_every_job_type(generated: ModuleType, client, schema: dict) -> dict[str, str]:
    """Submit one job of each type with the generated models; return their ids by type."""
    models = module(generated, "models")
    components = job_create_components(schema)
    assert set(components) == set(PARAMETERS)
    submitted = {}
    for job_type, parameters in PARAMETERS.items():
        request_model, parameters_component = components[job_type]
        # Valid by the schema itself, as a client checking before it submits would find.
        parameters_schema = f"#/components/schemas/{parameters_component}"
        OAS30Validator({"components": schema["components"], "$ref": parameters_schema}).validate(
            parameters
        )
        body = getattr(models, request_model).from_dict(
            {"name": f"a {job_type} job", "job_type": job_type, "parameters": parameters}
        )
        created = module(generated, "api.jobs.jobs_create").sync_detailed(
            client=client, body=body, idempotency_key=str(uuid.uuid4())
        )
        assert created.status_code == 201, created.content
        submitted[job_type] = str(created.parsed.id)
    return submitted


def test_a_generated_client_submits_every_job_type_and_reads_the_results(
    live_server, live_worker, celery_log_dir, schema, generated, public, settings
):
    # Throttle counters of its own, whatever other tests of this run asked of 127.0.0.1.
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"client-{uuid.uuid4().hex}"},
    }
    models = module(generated, "models")
    retrieve = module(generated, "api.jobs.jobs_retrieve")
    read_result = module(generated, "api.jobs.jobs_result_retrieve")
    tokens = sign_up(generated, public, celery_log_dir / "emails")

    with generated.AuthenticatedClient(
        base_url=live_server.url, token=tokens.access, raise_on_unexpected_status=True
    ) as client:
        for job_type, job_id in submit_every_job_type(generated, client, schema).items():
            job = wait_for(
                partial(finished, retrieve, job_id, client),
                timeout=30,
                interval=0.2,
                message=f"the {job_type} job did not finish",
            )
            result = read_result.sync_detailed(job_id, client=client)
            if job_type == "fail":
                assert job.status == models.StatusEnum.FAILED
                assert job.error_message == "Failed on purpose."
                assert result.status_code == 400  # Only completed jobs have a result.
            else:
                assert job.status == models.StatusEnum.COMPLETED, job.error_message
                assert result.status_code == 200, result.content
                assert str(result.parsed.job) == job_id
                assert OUTPUTS[job_type](result.parsed.output), (job_type, result.parsed.output)

    logout = module(generated, "api.accounts.logout_create").sync_detailed(
        client=public, body=models.LogoutRequest(refresh=tokens.refresh)
    )
    assert logout.status_code == 204
