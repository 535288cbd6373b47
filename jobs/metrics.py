"""Prometheus metrics about jobs, updated by the services where each state change happens.

Counters and histograms live in the process that changes the state: `jobs_created_total` in
web processes, the rest in worker processes. With PROMETHEUS_MULTIPROC_DIR set, every process
on a host writes them to that folder and /metrics adds them up (see job_system.metrics).
Gauges of pending and running jobs are read from the database at scrape time instead: the
database is the truth, and a gauge kept by hand in many processes would drift.
"""

from collections.abc import Iterator

from django.db.models import Count, Q
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobs import handlers
from jobs.models import Job

# From an echo job's milliseconds to a one-hour sleep job.
RUN_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# From a worker that was idle to a backlog (or a retry backoff) of many minutes.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

JOBS_CREATED = Counter("jobs_created", "Jobs submitted.", ["job_type"])
JOBS_COMPLETED = Counter("jobs_completed", "Jobs that finished with a result.", ["job_type"])
JOBS_FAILED = Counter(
    "jobs_failed",
    "Jobs that failed for good (retries used up, or a permanent error).",
    ["job_type"],
)
JOB_RUN_SECONDS = Histogram(
    "job_run_seconds",
    "Time a worker spent on one attempt of a job, whatever its outcome.",
    ["job_type"],
    buckets=RUN_TIME_BUCKETS,
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "job_queue_wait_seconds",
    "Time from when an attempt could start (created, scheduled time or end of backoff) to "
    "when a worker claimed it.",
    ["job_type"],
    buckets=QUEUE_WAIT_BUCKETS,
)


def job_created(job: Job) -> None:
    JOBS_CREATED.labels(job.job_type).inc()


def job_claimed(job: Job) -> None:
    """Observe how long a claimed job waited; run_after is when it became due."""
    waited = (job.started_at - job.run_after).total_seconds()
    JOB_QUEUE_WAIT_SECONDS.labels(job.job_type).observe(max(0.0, waited))


def job_attempt_ran(job: Job, *, seconds: float) -> None:
    JOB_RUN_SECONDS.labels(job.job_type).observe(seconds)


def job_completed(job: Job) -> None:
    JOBS_COMPLETED.labels(job.job_type).inc()


def job_failed(job: Job) -> None:
    JOBS_FAILED.labels(job.job_type).inc()


class ActiveJobsCollector(Collector):
    """Pending and running jobs by type, counted in the database when scraped.

    One query per partial index (see Job.Meta.indexes), each filter spelled so that the
    planner can use its index: milliseconds, not a 120 ms scan, at a million jobs. Every
    registered type is reported, at 0 when idle, so an alert on a type's backlog does not
    vanish when it empties.
    """

    GAUGES = [
        (
            "jobs_pending",
            "Jobs waiting to run, by type.",
            [
                Q(status=Job.Status.PENDING, enqueued_at=None),
                Q(status=Job.Status.PENDING, enqueued_at__isnull=False),
            ],
        ),
        (
            "jobs_in_progress",
            "Jobs running now, by type.",
            # Every running job has a lease (the job_running_has_lease constraint).
            [Q(status=Job.Status.IN_PROGRESS, lease_expires_at__isnull=False)],
        ),
    ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text, filters in self.GAUGES:
            counts = dict.fromkeys(handlers.names(), 0)
            for condition in filters:
                rows = (
                    Job.objects.filter(condition)
                    .order_by()
                    .values_list("job_type")
                    .annotate(count=Count("pk"))
                )
                for job_type, count in rows:
                    counts[job_type] = counts.get(job_type, 0) + count
            family = GaugeMetricFamily(name, help_text, labels=["job_type"])
            for job_type, count in sorted(counts.items()):
                family.add_metric([job_type], count)
            yield family
