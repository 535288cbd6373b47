"""The schedules API: a user's own schedules, validated field by field, within the limits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from schedules.models import Schedule, ScheduleRun
from schedules.serializers import GAP_SAMPLE, _gap_sample
from schedules.views import WEEKDAYS_IN_BERLIN as WEEKDAYS

SCHEDULES = "/api/schedules/"


def create(client, **changes):
    return client.post(SCHEDULES, {**WEEKDAYS, **changes}, format="json")


def test_a_created_schedule_shows_its_next_ten_ticks(auth_client):
    response = create(auth_client)

    assert response.status_code == 201, response.data
    data = response.data
    assert data["cron"] == "0 7 * * mon-fri"
    assert data["interval_seconds"] is None
    assert data["job"] == {
        "job_type": "echo",
        "parameters": {"message": "good morning", "data": None},
        "timeout_seconds": None,
        "max_retries": None,
        "priority": 5,
    }
    assert (data["overlap_policy"], data["catchup_policy"]) == ("skip", "skip")
    assert len(data["next_runs"]) == 10
    assert data["next_runs"][0]["fire_time"] == data["next_fire_at"]
    assert data["last_runs"] == []
    schedule = Schedule.objects.get(pk=data["id"])
    assert [run["fire_time"] for run in data["next_runs"]] == [
        tick.isoformat().replace("+00:00", "Z") for tick in schedule.next_runs(10)
    ]


def test_an_interval_schedule_fires_on_multiples_of_its_interval(auth_client):
    response = auth_client.post(
        SCHEDULES,
        {"name": "poll", "interval_seconds": 900, "job": {"job_type": "echo"}},
        format="json",
    )

    assert response.status_code == 201, response.data
    schedule = Schedule.objects.get(pk=response.data["id"])
    assert schedule.next_fire_at.minute % 15 == 0
    assert schedule.next_fire_at.second == 0
    assert schedule.next_fire_at > timezone.now()


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"cron": "0 7 * *"}, "cron", "invalid"),
        ({"cron": "0 25 * * *"}, "cron", "invalid"),
        ({"cron": "0 0 30 2 *"}, "cron", "invalid"),
        ({"cron": "* * * * * *"}, "cron", "invalid"),
        ({"cron": "@daily"}, "cron", "invalid"),
        ({"interval_seconds": 60}, "interval_seconds", "both"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "invalid_choice"),
        ({"overlap_policy": "queue"}, "overlap_policy", "invalid_choice"),
        ({"catchup_window_seconds": 10**9}, "catchup_window_seconds", "max_value"),
        ({"jitter_seconds": -1}, "jitter_seconds", "min_value"),
        ({"end_at": "2020-01-01T00:00:00Z"}, "end_at", "past"),
        (
            {"start_at": "2031-01-01T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
            "end_at",
            "before_start",
        ),
        ({"job": {"job_type": "nope"}}, "job", None),
        ({"job": {"job_type": "sleep", "parameters": {"seconds": "a while"}}}, "job", None),
        ({"job": {"job_type": "echo", "timeout_seconds": 10**6}}, "job", None),
    ],
)
def test_bad_input_is_a_400_keyed_by_its_field(auth_client, changes, field, code):
    response = create(auth_client, **changes)

    assert response.status_code == 400
    assert list(response.data) == [field]
    if code:
        assert response.data[field][0].code == code


def test_neither_cron_nor_interval_is_a_400(auth_client):
    response = auth_client.post(SCHEDULES, {"name": "x", "job": {}}, format="json")

    assert response.status_code == 400
    assert response.data["cron"][0].code == "required"


def test_intervals_and_crons_below_the_shortest_interval_are_refused(auth_client, settings):
    settings.SCHEDULE_MIN_INTERVAL_SECONDS = 300

    interval = auth_client.post(
        SCHEDULES, {"name": "x", "interval_seconds": 299, "job": {}}, format="json"
    )
    cron = create(auth_client, cron="*/4 * * * *")
    rare = create(auth_client, cron="0,5 * * * *")

    assert interval.data["interval_seconds"][0].code == "min_value"
    assert cron.data["cron"][0].code == "too_often"
    assert rare.status_code == 201


def test_a_user_may_have_only_so_many_schedules(auth_client, settings):
    settings.SCHEDULES_PER_USER = 2
    assert create(auth_client).status_code == 201
    assert create(auth_client).status_code == 201

    response = create(auth_client)

    assert response.status_code == 409
    assert response.data["detail"].code == "too_many_schedules"


def test_other_users_schedules_are_not_found(auth_client, schedule_factory):
    other = schedule_factory()

    assert auth_client.get(f"{SCHEDULES}{other.pk}/").status_code == 404
    assert (
        auth_client.patch(f"{SCHEDULES}{other.pk}/", {"name": "x"}, format="json").status_code
        == 404
    )
    assert auth_client.post(f"{SCHEDULES}{other.pk}/trigger/").status_code == 404
    assert auth_client.post(f"{SCHEDULES}{other.pk}/pause/").status_code == 404
    assert auth_client.delete(f"{SCHEDULES}{other.pk}/").status_code == 404
    assert auth_client.get(SCHEDULES).data["results"] == []
    assert auth_client.get(f"/api/jobs/?schedule={other.pk}").data["results"] == []


def test_the_list_costs_the_same_queries_for_any_number_of_schedules(
    auth_client, verified_user, schedule_factory, django_assert_max_num_queries
):
    schedule_factory.create_batch(15, owner=verified_user)

    with django_assert_max_num_queries(3):
        response = auth_client.get(SCHEDULES)

    assert len(response.data["results"]) == 15
    assert "next_runs" not in response.data["results"][0]


def test_a_new_time_starts_the_ticks_afresh(auth_client):
    created = create(auth_client).data

    response = auth_client.patch(
        f"{SCHEDULES}{created['id']}/", {"cron": "30 8 * * *", "time_zone": "UTC"}, format="json"
    )

    assert response.status_code == 200, response.data
    assert response.data["next_fire_at"].endswith("08:30:00Z")
    assert response.data["job"] == created["job"]


def test_patching_interval_over_cron_switches_the_kind(auth_client):
    created = create(auth_client).data

    response = auth_client.patch(
        f"{SCHEDULES}{created['id']}/", {"interval_seconds": 3600}, format="json"
    )

    assert response.status_code == 200, response.data
    assert (response.data["cron"], response.data["interval_seconds"]) == (None, 3600)


def test_a_patched_job_replaces_the_template_whole(auth_client):
    created = create(auth_client, job={"job_type": "echo", "priority": 9}).data

    response = auth_client.patch(
        f"{SCHEDULES}{created['id']}/", {"job": {"parameters": {"message": "x"}}}, format="json"
    )

    assert response.status_code == 200, response.data
    assert response.data["job"]["priority"] == 5
    assert response.data["job"]["parameters"]["message"] == "x"


def test_pause_and_resume(auth_client):
    created = create(auth_client).data
    url = f"{SCHEDULES}{created['id']}/"

    paused = auth_client.post(f"{url}pause/")
    again = auth_client.post(f"{url}pause/")
    resumed = auth_client.post(f"{url}resume/")

    assert paused.status_code == again.status_code == 200
    assert (paused.data["enabled"], paused.data["next_runs"]) == (False, [])
    assert resumed.data["enabled"] is True
    assert resumed.data["next_fire_at"] == created["next_fire_at"]


def test_trigger_runs_one_now_and_the_jobs_list_shows_it(auth_client):
    created = create(auth_client).data
    before = timezone.now()

    response = auth_client.post(f"{SCHEDULES}{created['id']}/trigger/")

    assert response.status_code == 201, response.data
    assert (response.data["kind"], response.data["status"]) == ("trigger", "pending")
    job = Job.objects.get(pk=response.data["job"])
    assert job.run_after - before < timedelta(seconds=5)
    listed = auth_client.get(f"/api/jobs/?schedule={created['id']}").data["results"]
    assert [item["id"] for item in listed] == [str(job.pk)]
    detail = auth_client.get(f"{SCHEDULES}{created['id']}/").data
    assert [(run["kind"], run["job"], run["status"]) for run in detail["last_runs"]] == [
        ("trigger", job.pk, "pending")
    ]


def test_triggering_a_schedule_whose_job_type_is_gone_is_a_conflict(auth_client):
    created = create(auth_client).data
    Schedule.objects.filter(pk=created["id"]).update(job_type="retired")

    response = auth_client.post(f"{SCHEDULES}{created['id']}/trigger/")

    assert response.status_code == 409, response.data
    assert response.data["detail"].code == "unknown_job_type"
    assert "'retired'" in response.data["detail"]
    detail = auth_client.get(f"{SCHEDULES}{created['id']}/").data
    assert [(run["kind"], run["status"], run["skipped"]) for run in detail["last_runs"]] == [
        ("trigger", "skipped", "unknown_job_type")
    ]
    assert not Job.objects.exists()


def test_deleting_a_schedule_keeps_its_jobs(auth_client):
    created = create(auth_client).data
    job_id = auth_client.post(f"{SCHEDULES}{created['id']}/trigger/").data["job"]

    assert auth_client.delete(f"{SCHEDULES}{created['id']}/").status_code == 204
    assert not ScheduleRun.objects.exists()
    assert Job.objects.filter(pk=job_id).exists()


def test_a_bad_schedule_filter_on_jobs_is_a_400(auth_client):
    response = auth_client.get("/api/jobs/?schedule=not-a-uuid")

    assert response.status_code == 400
    assert "schedule" in response.data


def test_checking_a_sparse_expression_costs_a_few_searches_at_most():
    # A fifth Monday of February comes every 28 years or so: each tick is a long search, so the
    # check looks at the first only, not 50.
    assert len(_gap_sample("0 0 * 2 mon#5")) == 1
    assert len(_gap_sample("* * * * *")) == GAP_SAMPLE


def test_null_for_the_kind_a_schedule_does_not_have_is_the_same_as_leaving_it_out(auth_client):
    response = auth_client.post(
        SCHEDULES,
        {"name": "poll", "cron": None, "interval_seconds": 900, "job": {}},
        format="json",
    )
    patched = auth_client.patch(
        f"{SCHEDULES}{response.data['id']}/", {"interval_seconds": None}, format="json"
    )

    assert response.status_code == 201, response.data
    assert (patched.data["cron"], patched.data["interval_seconds"]) == (None, 900)
