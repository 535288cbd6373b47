"""Every change to a job's state happens in this package.

A state change is a conditional UPDATE whose row count says whether it happened, so web
processes, workers and Beat can race freely: a job is claimed once, finishes once and has at
most one result. Broker messages only carry job ids and are hints; the database is the truth.

- submission: what clients ask for (create, cancel, retry).
- admission: which waiting jobs get a message, in fair order and within the limits.
- execution: what a worker does (claim, lease, run, complete, fail).
- recovery: what Beat and shutting-down workers do (dispatch, reap, hand back).
- pruning: what Beat deletes once it has expired (finished jobs past their expires_at).
- transitions: the table of every write to a job, and the only code that makes them.
"""

from jobs.services.admission import jobs_admit, jobs_admit_if_waiting
from jobs.services.common import (
    IdempotencyConflict,
    JobStateError,
    TooManyActiveJobs,
    retry_delay,
)
from jobs.services.execution import (
    JobTimedOut,
    job_claim,
    job_complete,
    job_fail_attempt,
    job_progress_reporter,
    job_run,
    jobs_run_in_turn,
)
from jobs.services.pruning import jobs_prune_expired
from jobs.services.recovery import (
    job_release_if_early,
    jobs_dispatch_due,
    jobs_hand_back,
    jobs_reap_stale,
    jobs_requeue_stuck,
)
from jobs.services.submission import (
    idempotency_key_used,
    job_cancel,
    job_create,
    job_retry,
    jobs_create_bulk,
    jobs_create_for_owners,
)

__all__ = [
    "IdempotencyConflict",
    "JobStateError",
    "JobTimedOut",
    "TooManyActiveJobs",
    "idempotency_key_used",
    "job_cancel",
    "job_claim",
    "job_complete",
    "job_create",
    "job_fail_attempt",
    "job_progress_reporter",
    "job_release_if_early",
    "job_retry",
    "job_run",
    "jobs_admit",
    "jobs_admit_if_waiting",
    "jobs_create_bulk",
    "jobs_create_for_owners",
    "jobs_dispatch_due",
    "jobs_hand_back",
    "jobs_prune_expired",
    "jobs_reap_stale",
    "jobs_requeue_stuck",
    "jobs_run_in_turn",
    "retry_delay",
]
