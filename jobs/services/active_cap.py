"""The cap on a user's active (pending and running) jobs: MAX_ACTIVE_JOBS_PER_USER.

Counting a user's active jobs reads an index entry per job, up to the cap (10,000 by default),
which made each submission slower the more jobs were waiting. So the database count is taken at
most once every ACTIVE_COUNT_SECONDS per user and kept in Redis, where each submission adds its
jobs. Jobs that finish in between still count until the next recount: near the cap, a client
may be refused up to that long after room was made.

A count, not a lock: concurrent submissions can pass the cap by a few, which is fine for a
resource limit and keeps submissions from queueing behind one another. Many owners' jobs are
counted together (the schedules' dispatcher creates many owners' jobs at once), in one Redis
round trip however many owners there are.
"""

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count

from job_system.cache import cache_redis
from jobs.models import Job
from jobs.services.common import TooManyActiveJobs

ACTIVE_COUNT_SECONDS = 2

# INCRBY only while the count exists: an INCRBY on an expired key would restart it from 0.
_ADD_TO_COUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


def active_jobs_count(owner_id: int, *, adding: int = 1) -> None:
    """Count an owner's new jobs against its cap; raise TooManyActiveJobs if they pass it."""
    if active_jobs_count_many({owner_id: adding}):
        raise TooManyActiveJobs(limit=settings.MAX_ACTIVE_JOBS_PER_USER)


def active_jobs_count_many(adding: Mapping[int, int]) -> set[int]:
    """Count each owner's new jobs against its cap; return the owners they would take past it.

    The refused owners' jobs are taken off their counts again: refused jobs do not count.
    """
    limit = settings.MAX_ACTIVE_JOBS_PER_USER
    owner_ids = list(adding)
    client = cache_redis()
    try:
        totals = dict(zip(owner_ids, _add_to_counts(client, adding), strict=True))
    except redis.RedisError:
        # Redis restarting: count in the database, as every submission once did.
        counted = _count_active_jobs(owner_ids)
        return {owner_id for owner_id in owner_ids if counted[owner_id] + adding[owner_id] > limit}
    if missing := [owner_id for owner_id, total in totals.items() if total is None]:
        totals |= _start_counts(client, {owner_id: adding[owner_id] for owner_id in missing})
    refused = {owner_id for owner_id, total in totals.items() if total > limit}
    if refused:
        active_jobs_uncount({owner_id: adding[owner_id] for owner_id in refused})
    return refused


def active_jobs_uncount(counted: Mapping[int, int]) -> None:
    """Take jobs that were counted but did not become active off their owners' counts."""
    # Through _ADD_TO_COUNT, not DECRBY, which would recreate an expired count with no expiry.
    # Without Redis there is no count to correct: the next one is taken afresh.
    with contextlib.suppress(redis.RedisError):
        _add_to_counts(cache_redis(), {owner_id: -count for owner_id, count in counted.items()})


def _add_to_counts(client: redis.Redis, adding: Mapping[int, int]) -> list[int | None]:
    """Add to each owner's count that exists; the new totals, None where there was none."""
    pipe = client.pipeline(transaction=False)
    for owner_id, count in adding.items():
        pipe.eval(_ADD_TO_COUNT, 1, _key(owner_id), count)
    return pipe.execute()


def _start_counts(client: redis.Redis, adding: Mapping[int, int]) -> dict[int, int]:
    """Count the owners' active jobs in the database, store each count with its new jobs."""
    counted = _count_active_jobs(adding)
    totals = {owner_id: counted[owner_id] + count for owner_id, count in adding.items()}
    pipe = client.pipeline(transaction=False)
    for owner_id, total in totals.items():
        pipe.set(_key(owner_id), total, ex=ACTIVE_COUNT_SECONDS, nx=True)
    stored = dict(zip(totals, pipe.execute(), strict=True))
    # Another submission counted at the same moment: add to its count.
    raced = {owner_id: adding[owner_id] for owner_id, done in stored.items() if not done}
    if raced:
        for owner_id, total in zip(raced, _add_to_counts(client, raced), strict=True):
            totals[owner_id] = total or totals[owner_id]
    return totals


def _count_active_jobs(owner_ids: Iterable[int]) -> Counter[int]:
    # Not capped per owner: this check keeps each owner's count near its cap, so a count reads
    # at most about the cap's worth of index entries per owner.
    rows = (
        Job.objects.filter(owner_id__in=list(owner_ids), status__in=Job.ACTIVE_STATUSES)
        .order_by()
        .values_list("owner_id")
        .annotate(count=Count("pk"))
    )
    return Counter(dict(rows))


def _key(owner_id: int) -> str:
    return cache.make_and_validate_key(f"active-jobs:{owner_id}")
