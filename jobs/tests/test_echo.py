"""The echo job type, as a client meets it: any JSON value in `data` comes back unchanged."""

import jsonschema
import pytest

from jobs import services
from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("data", [None, 0, "", [], {"nested": [1, 2.5, None, True]}])
def test_echo_returns_any_json_data_null_included(auth_client, data):
    created = auth_client.post(
        "/api/jobs/", {"name": "echo", "parameters": {"data": data}}, format="json"
    )
    services.job_run(job_id=created.json()["id"], worker="w@host")

    result = auth_client.get(f"/api/jobs/{created.json()['id']}/result/")

    assert created.status_code == 201
    assert result.json()["output"] == {"message": "", "data": data}


def test_a_job_stored_without_data_shows_the_null_it_accepts(auth_client):
    stored = auth_client.post("/api/jobs/", {"name": "no data"}, format="json").json()
    resent = {"name": "again", "parameters": stored["parameters"]}

    assert stored["parameters"] == {"message": "", "data": None}
    assert auth_client.post("/api/jobs/", resent, format="json").status_code == 201
    assert Job.objects.count() == 2


def test_the_published_schema_of_data_allows_null(api_client):
    [echo] = [t for t in api_client.get("/api/job-types/").json() if t["name"] == "echo"]

    jsonschema.validate({"data": None}, echo["parameters_schema"])
