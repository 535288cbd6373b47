"""What makes a submission the same request as an earlier one with its Idempotency-Key.

Two requests are the same when they ask for the same jobs: the jobs as they would be stored,
after validation, with every default filled in. A body that spells out a default, orders its
keys differently or gives a time in another zone asks for the same jobs. A single submission
and a bulk request never match, even for one job: they get different answers.

No models and no services here: migration 0008 fingerprints the jobs stored before it with
these very functions.
"""

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

# What a client chooses about a job; everything else on a job is the server's.
REQUESTED_FIELDS = (
    "name",
    "description",
    "job_type",
    "parameters",
    "scheduled_time",
    "max_retries",
    "timeout_seconds",
)


def request_fingerprint(endpoint: Literal["job", "bulk"], jobs: Iterable[Any]) -> str:
    """Return a digest of the jobs a request asks for (unsaved Job objects, in order)."""
    requested = [{field: getattr(job, field) for field in REQUESTED_FIELDS} for job in jobs]
    canonical = json.dumps(
        {"endpoint": endpoint, "jobs": requested},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_utc_time,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _utc_time(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
