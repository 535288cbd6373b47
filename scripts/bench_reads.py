"""The read half of `scripts/bench.py`: listing jobs at 1k rows and at 1M rows.

Rows are seeded straight into the database (bulk inserts through the ORM, not the API), all
owned by one user, the worst case for that user's list. For each size it times the first
page and a page from the middle of the list over HTTP, and counts the queries each page runs.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any
from urllib.parse import quote

from scripts.stack import Api, Stack

SAMPLES = 25
SMALL_ROWS = 1000

# Runs inside `manage.py shell`: seeds rows up to a total, then reports a middle cursor and
# the queries each page takes, measured in-process by Django itself.
SEED_AND_COUNT = """
import base64, json
from datetime import timedelta
from urllib.parse import urlencode
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from jobs.models import Job
from jobs.pagination import NewestFirstPagination
from users.models import CustomUser

owner = CustomUser.objects.get(email={email!r})
have = Job.objects.filter(owner=owner).count()
start = timezone.now() - timedelta(days=30)
batch = []
for n in range(have, {rows}):
    batch.append(Job(owner=owner, name=f"seeded {{n}}", status="completed", progress=100,
                     created_at=start + timedelta(milliseconds=n), run_after=start))
    if len(batch) == 20000:
        Job.objects.bulk_create(batch)
        batch = []
Job.objects.bulk_create(batch)

middle = Job.objects.filter(owner=owner).order_by("-created_at")[{rows} // 2]
position = NewestFirstPagination()._get_position_from_instance(middle, ["-created_at"])
cursor = base64.b64encode(urlencode({{"p": position}}).encode()).decode()
client = APIClient(HTTP_HOST="127.0.0.1")  # the Stack allows only loopback hosts
client.force_authenticate(owner)
queries = {{}}
for label, params in (("first", {{}}), ("deep", {{"cursor": cursor}})):
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/jobs/", params)
    assert response.status_code == 200, response.content
    queries[label] = len(captured)
print("RESULT" + json.dumps({{"cursor": cursor, "queries": queries}}))
"""


def measure(figures: Any, stack: Stack, token: str, large_rows: int) -> None:
    email, password = stack.create_verified_user()
    token = stack.login(email, password)
    small = page_figures(stack, token, email, SMALL_ROWS)
    large = page_figures(stack, token, email, large_rows)
    for label in ("first", "deep"):
        figures.add(f"list_{label}_page_1k", small[label], "ms")
        figures.add(f"list_{label}_page_{large_rows // 1000}k", large[label], "ms")
        figures.add(f"list_{label}_page_ratio", large[label] / small[label], "x")
        figures.add(f"list_{label}_page_queries_1k", small[f"{label}_queries"], "queries")
        figures.add(
            f"list_{label}_page_queries_{large_rows // 1000}k",
            large[f"{label}_queries"],
            "queries",
        )


def page_figures(stack: Stack, token: str, email: str, rows: int) -> dict[str, float]:
    output = stack.manage("shell", input_text=SEED_AND_COUNT.format(email=email, rows=rows))
    result = json.loads(output.split("RESULT", 1)[1])
    api = Api(stack.base_url, token)
    figures = {
        "first": median_ms(api, "/api/jobs/"),
        "deep": median_ms(api, f"/api/jobs/?cursor={quote(result['cursor'])}"),
        "first_queries": result["queries"]["first"],
        "deep_queries": result["queries"]["deep"],
    }
    api.close()
    return figures


def median_ms(api: Api, path: str) -> float:
    api.request("GET", path)  # warm caches and the connection
    samples = []
    for _ in range(SAMPLES):
        began = time.perf_counter()
        status, _ = api.request("GET", path)
        samples.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return statistics.median(samples)
