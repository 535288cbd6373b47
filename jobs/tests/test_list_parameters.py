"""The query parameters of the list endpoints: what is not documented is refused, by name."""

import base64
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
RESULTS = "/api/job-results/"


def forged_cursor(position: str) -> str:
    return base64.b64encode(f"p={quote(position)}".encode()).decode()


def assert_refused(response, parameter: str, code: str) -> None:
    assert response.status_code == 400
    assert [error.code for error in response.data[parameter]] == [code]


@pytest.mark.parametrize("page_size", ["null", "", "2.0", " 5", "+5", "-1", "\u0665"])
def test_a_page_size_that_is_not_a_whole_number_is_refused(auth_client, page_size):
    assert_refused(auth_client.get(JOBS, {"page_size": page_size}), "page_size", "invalid")


def test_a_page_size_of_zero_is_refused(auth_client):
    assert_refused(auth_client.get(JOBS, {"page_size": "000"}), "page_size", "min_value")


def test_a_huge_page_size_gives_the_largest_page(auth_client, verified_user, job_factory):
    job_factory.create_batch(3, owner=verified_user)

    response = auth_client.get(JOBS, {"page_size": "9" * 5000})

    assert response.status_code == 200
    assert len(response.data["results"]) == 3


@pytest.mark.parametrize("parameter", ["page_size", "cursor", "ordering", "status", "job_type"])
def test_a_repeated_parameter_is_refused_rather_than_half_read(auth_client, parameter):
    valid = {
        "page_size": "5",
        "cursor": "",
        "ordering": "name",
        "status": "pending",
        "job_type": "echo",
    }[parameter]

    response = auth_client.get(f"{JOBS}?{parameter}={valid}&{parameter}={valid}")

    assert_refused(response, parameter, "repeated")


def test_a_repeated_job_filter_on_results_is_refused(auth_client, job_result_factory):
    result = job_result_factory()

    response = auth_client.get(f"{RESULTS}?job={result.job_id}&job={result.job_id}")

    assert_refused(response, "job", "repeated")


@pytest.mark.parametrize(("url", "parameter"), [(JOBS, "status"), (RESULTS, "job")])
def test_an_empty_filter_is_refused_rather_than_ignored(auth_client, url, parameter):
    assert_refused(auth_client.get(f"{url}?{parameter}="), parameter, "blank")


@pytest.mark.parametrize(
    "ordering", ["nmae", "", "-name,name,created_at", "name,", "--name", " name"]
)
def test_an_ordering_that_names_no_field_is_refused(auth_client, ordering):
    assert_refused(auth_client.get(JOBS, {"ordering": ordering}), "ordering", "invalid")


def test_two_orderings_apply_in_turn(auth_client, verified_user, job_factory):
    b_old = job_factory(owner=verified_user, name="b")
    a = job_factory(owner=verified_user, name="a")
    b_new = job_factory(owner=verified_user, name="b")

    response = auth_client.get(JOBS, {"ordering": "name,-created_at"})

    assert [job["id"] for job in response.data["results"]] == [str(j.pk) for j in (a, b_new, b_old)]


@pytest.mark.parametrize(
    ("url", "position"),
    [
        (JOBS, "not a time"),  # created_at
        (RESULTS, "2026-13-45"),  # completed_at
        (f"{JOBS}?ordering=name", "a\x00b"),  # a name no job can have
    ],
)
def test_a_forged_cursor_position_is_refused_by_name_not_a_server_error(auth_client, url, position):
    separator = "&" if "?" in url else "?"

    response = auth_client.get(f"{url}{separator}cursor={quote(forged_cursor(position))}")

    assert_refused(response, "cursor", "invalid")
    assert response.json() == {
        "cursor": ["Invalid cursor: copy it from a page's `next` or `previous`."]
    }


# Not base64; base64 of something else than a cursor; a cursor whose offset is no number.
@pytest.mark.parametrize("cursor", ["__dict__", "cD0x\n", "é", "/w==", "bz14"])
def test_a_cursor_that_this_list_did_not_give_out_is_refused_by_name(auth_client, cursor):
    assert_refused(auth_client.get(JOBS, {"cursor": cursor}), "cursor", "invalid")


def test_the_next_cursor_still_works(auth_client, verified_user, job_factory):
    job_factory.create_batch(3, owner=verified_user)

    first = auth_client.get(JOBS, {"page_size": 2, "ordering": "name"})
    second = auth_client.get(first.data["next"])

    assert second.status_code == 200
    assert len(second.data["results"]) == 1


@pytest.mark.parametrize(
    "url", [f"{JOBS}0.5/", f"{JOBS}0.5/result/", f"{JOBS}0.5/cancel/", f"{RESULTS}0.5/"]
)
def test_a_malformed_id_gets_the_apis_json_404(auth_client, url):
    method = auth_client.post if url.endswith("cancel/") else auth_client.get

    response = method(url)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
