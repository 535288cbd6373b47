"""Every write to a job's row, by name: the state machine in one place.

A transition names the statuses it starts from, the status it ends in, its fence (the rest of
its WHERE clause) and what it always writes. Callers name one, pass the job (or, for the bulk
ones, a queryset of jobs) and the values that vary; this module adds the from-status and the
fence, stamps updated_at, and answers with the row count, or the updated row where the caller
needs it. A write that is not in TRANSITIONS cannot be expressed, and one that finds the job
in another status, or held by another claim, writes nothing. A transition that finishes a job
also stamps its expires_at (jobs.retention), worked out from the caller's copy of the job,
whose type, creation time and Idempotency-Key never change.

Single-row transitions are compiled from the ORM once per shape (the transition and the
names of the caller's values) and cached as SQL with slots: compiling an UPDATE through the
ORM on every call cost a quick job's worker a noticeable share of its time. The ones that also
insert rows (the attempt's record, the result) run on PostgreSQL as one statement, a
data-modifying WITH that is atomic without BEGIN and COMMIT, and elsewhere as the UPDATE and
the INSERTs in one transaction. Both are built from the same description of the writes
(Transition.records), and a test runs both on PostgreSQL and compares the rows they leave.
"""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from typing import Any, NamedTuple

from django.db import connections, router, transaction
from django.db.models import (
    DateTimeField,
    Expression,
    F,
    Field,
    Model,
    Q,
    QuerySet,
    UUIDField,
)
from django.db.models.sql import InsertQuery, UpdateQuery
from django.utils import timezone

from events import recording as events
from events.models import Event, EventType
from jobs import retention
from jobs.models import Job, JobAttempt, JobResult, WaitingFor

MAX_ERROR_MESSAGE_LENGTH = 2000

PENDING = Job.Status.PENDING
IN_PROGRESS = Job.Status.IN_PROGRESS
COMPLETED = Job.Status.COMPLETED
FAILED = Job.Status.FAILED
CANCELLED = Job.Status.CANCELLED


class _Slot(Expression):
    """A value the cached SQL keeps as a placeholder, filled by name on each call."""

    def __init__(self, name: str, output_field: Field) -> None:
        super().__init__(output_field=output_field)
        self.name = name

    def as_sql(self, compiler, connection) -> tuple[str, list[Any]]:
        return "%s", [_SlotRef(self.name, self.output_field)]


class _SlotRef(NamedTuple):
    name: str
    field: Field


# What a fence compares with, filled on each call: the transition's time, and the claim token
# of the caller's copy of the job.
NOW = _Slot("now", DateTimeField())
CLAIM_TOKEN = _Slot("fence_claim_token", UUIDField())


class Row(NamedTuple):
    """A row a transition inserts beside its UPDATE, only if the UPDATE changed the job."""

    model: type[Model]
    # Columns copied from the job as the UPDATE left it.
    from_job: Mapping[str, str]
    # Columns the caller gives (apply(record=...)).
    given: tuple[str, ...] = ()
    # Columns with the same value every time.
    fixed: Mapping[str, Any] = {}
    # Columns set to the transition's time.
    stamped: tuple[str, ...] = ()
    ignore_conflicts: bool = False
    # Only when the updated job holds a claim: a cancelled job that was running, not one that
    # was pending.
    if_claimed: bool = False
    # Columns this module works out on each call (an event's type and what its job waits for).
    computed: tuple[str, ...] = ()


def attempt_row(*, outcome: str | None = None, if_claimed: bool = False) -> Row:
    """The record of the attempt the job was claimed for, as it ends.

    With no `outcome`, the caller gives it, and an error message. A second outcome for the
    same claim (a worker that finds its job cancelled under it) meets the unique claim token
    and is dropped.
    """
    return Row(
        JobAttempt,
        from_job={
            "job_id": "id",
            "number": "attempts",
            "run": "run",
            "claim_token": "claim_token",
            "worker": "worker",
            "started_at": "started_at",
        },
        given=() if outcome else ("outcome", "error_message"),
        fixed={"outcome": outcome, "error_message": ""} if outcome else {},
        stamped=("finished_at",),
        ignore_conflicts=True,
        if_claimed=if_claimed,
    )


RESULT = Row(
    JobResult,
    from_job={"job_id": "id"},
    given=("output", "output_bytes", "duration_ms"),
    stamped=("completed_at",),
)


# The event that tells the job's owner of the change (events.models); numbered after the
# commit (events.recording).
EVENT = Row(
    Event,
    from_job={
        "owner_id": "owner_id",
        "job_id": "id",
        "status": "status",
        "attempt": "attempts",
        "progress": "progress",
    },
    computed=("type", "waiting_for"),
    stamped=("created_at",),
)


@dataclass(frozen=True, eq=False)
class Transition:
    """One kind of write to a job: from which statuses, to which, under which fence."""

    name: str
    # The statuses it starts from; none for the INSERT that creates a job.
    sources: tuple[str, ...]
    # The status it ends in; where there are two, the caller says which (`status=`).
    targets: tuple[str, ...]
    # The columns the caller gives values for; anything else is refused.
    takes: frozenset[str] = frozenset()
    # Only while the claim the caller holds still holds the job (its claim token).
    claimed: bool = False
    # Its fence beyond the status and the claim: conditions on the job's columns, compared with
    # NOW or CLAIM_TOKEN.
    fence: Q = field(default_factory=Q)
    # Written every time, beside the caller's values.
    sets: Mapping[str, Any] = field(default_factory=dict)
    # Inserted in the same statement or transaction, when the UPDATE changes the job.
    records: tuple[Row, ...] = ()

    def __str__(self) -> str:
        return self.name

    @property
    def changes_status(self) -> bool:
        return self.targets != self.sources

    @cached_property
    def finishes(self) -> bool:
        """Whether it can end the job (completed, failed, cancelled), and so stamps expires_at."""
        return self.changes_status and any(s in Job.FINISHED_STATUSES for s in self.targets)

    @cached_property
    def told(self) -> bool:
        """Whether it records an event."""
        return EVENT in self.records

    @cached_property
    def given(self) -> frozenset[str]:
        """The values the caller gives for the rows it records."""
        return frozenset(name for row in self.records for name in row.given)


# Back to pending: Beat's dispatcher publishes it again when it is due.
_BACK_TO_PENDING = {"enqueued_at": None, "claim_token": None, "lease_expires_at": None}

CREATE = Transition("create", sources=(), targets=(PENDING,))
# A message for the job is on its way to a worker.
ADMIT = Transition(
    "admit",
    sources=(PENDING,),
    targets=(PENDING,),
    takes=frozenset({"enqueued_at", "dispatch_token"}),
)
# The job has no message any more: the dispatcher publishes it again.
RELEASE = Transition("release", sources=(PENDING,), targets=(PENDING,), sets={"enqueued_at": None})
CLAIM = Transition(
    "claim",
    sources=(PENDING,),
    targets=(IN_PROGRESS,),
    takes=frozenset({"started_at", "claim_token", "lease_expires_at", "worker"}),
    # Due, and admitted: admission gave it a message within the limits (services.admission).
    fence=Q(run_after__lte=NOW, enqueued_at__isnull=False),
    sets={"attempts": F("attempts") + 1, "run_attempts": F("run_attempts") + 1, "progress": 0},
    records=(EVENT,),
)
RENEW = Transition(
    "renew",
    sources=(IN_PROGRESS,),
    targets=(IN_PROGRESS,),
    takes=frozenset({"lease_expires_at"}),
    claimed=True,
)
PROGRESS = Transition(
    "progress",
    sources=(IN_PROGRESS,),
    targets=(IN_PROGRESS,),
    takes=frozenset({"progress"}),
    claimed=True,
    records=(EVENT,),
)
COMPLETE = Transition(
    "complete",
    sources=(IN_PROGRESS,),
    targets=(COMPLETED,),
    takes=frozenset({"completed_at"}),
    claimed=True,
    sets={"progress": 100, "lease_expires_at": None, "error_message": ""},
    records=(RESULT, attempt_row(outcome=JobAttempt.Outcome.SUCCEEDED), EVENT),
)
# A failed attempt with retries left: pending again once its backoff is over.
RETRY_LATER = Transition(
    "retry_later",
    sources=(IN_PROGRESS,),
    targets=(PENDING,),
    takes=frozenset({"run_after", "error_message", "error_traceback"}),
    claimed=True,
    sets=_BACK_TO_PENDING,
    records=(attempt_row(), EVENT),
)
FAIL = Transition(
    "fail",
    sources=(IN_PROGRESS,),
    targets=(FAILED,),
    takes=frozenset({"completed_at", "error_message", "error_traceback"}),
    claimed=True,
    sets={"lease_expires_at": None},
    records=(attempt_row(), EVENT),
)
# A worker that is shutting down hands a running job back; the attempt does not count
# against max_retries.
HAND_BACK = Transition(
    "hand_back",
    sources=(IN_PROGRESS,),
    targets=(PENDING,),
    takes=frozenset({"run_after", "error_message"}),
    claimed=True,
    sets={**_BACK_TO_PENDING, "run_attempts": F("run_attempts") - 1},
    records=(attempt_row(outcome=JobAttempt.Outcome.HANDED_BACK), EVENT),
)
# The reaper reaps a job whose lease lapsed: requeued, or failed when it is out of
# retries or out of time. Fenced by the claim it found lapsed.
REAP = Transition(
    "reap",
    sources=(IN_PROGRESS,),
    targets=(PENDING, FAILED),
    takes=frozenset(
        {"status", "run_after", "enqueued_at", "claim_token", "completed_at", "error_message"}
    ),
    claimed=True,
    # Still lapsed: a worker that renewed after the reaper read the job keeps it.
    fence=Q(lease_expires_at__lt=NOW),
    sets={"lease_expires_at": None},
    records=(attempt_row(), EVENT),
)
CANCEL = Transition(
    "cancel",
    sources=(PENDING, IN_PROGRESS),
    targets=(CANCELLED,),
    takes=frozenset({"completed_at"}),
    sets={"lease_expires_at": None},
    records=(attempt_row(outcome=JobAttempt.Outcome.CANCELLED, if_claimed=True), EVENT),
)
# The owner's manual retry of a failed or cancelled job: a new run, with its own retries.
RERUN = Transition(
    "rerun",
    sources=(FAILED, CANCELLED),
    targets=(PENDING,),
    takes=frozenset({"run_after", "enqueued_at"}),
    sets={
        "run": F("run") + 1,
        "run_attempts": 0,
        "progress": 0,
        "error_message": "",
        "error_traceback": "",
        "started_at": None,
        "completed_at": None,
        "claim_token": None,
        "lease_expires_at": None,
        "worker": "",
        "expires_at": None,
    },
    records=(EVENT,),
)
# Staff edit a job's labels in the admin, whatever its status.
RELABEL = Transition(
    "relabel",
    sources=tuple(Job.Status.values),
    targets=tuple(Job.Status.values),
    takes=frozenset({"name", "description"}),
)

TRANSITIONS = {
    transition.name: transition
    for transition in (
        CREATE,
        ADMIT,
        RELEASE,
        CLAIM,
        RENEW,
        PROGRESS,
        COMPLETE,
        RETRY_LATER,
        FAIL,
        HAND_BACK,
        REAP,
        CANCEL,
        RERUN,
        RELABEL,
    )
}


class IllegalTransition(Exception):
    """A write the state machine does not have: a value it does not take, or a wrong status."""


def job_insert(job: Job) -> None:
    """Create: store a new pending job, with its job.pending event."""
    jobs_insert([job])


def jobs_insert(jobs: list[Job]) -> None:
    """Create: store new pending jobs, of any owners, with one bulk INSERT, and their events."""
    _check_new(jobs)
    using = router.db_for_write(Job)
    now = timezone.now()
    if connections[using].vendor in ONE_STATEMENT_VENDORS:
        _insert_told(jobs, now=now, using=using)
    else:
        # No savepoint of its own inside a caller's transaction: two round trips less.
        with transaction.atomic(using=using, savepoint=False):
            Job.objects.using(using).bulk_create(jobs)
            _tell_created(jobs, now=now, using=using)
    for owner_id in dict.fromkeys(job.owner_id for job in jobs):
        events.announce_on_commit(owner_id, EventType.PENDING, using=using)


def _insert_told(jobs: list[Job], *, now: datetime, using: str) -> None:
    """The jobs' INSERT and their events', as one statement: one round trip, no BEGIN."""
    connection = connections[using]
    query = InsertQuery(Job)
    query.insert_values(_INSERTED_FIELDS, jobs)
    [(insert_sql, params)] = query.get_compiler(using=using).as_sql()
    event_table = connection.ops.quote_name(Event._meta.db_table)
    # Names from the models only; every value is a parameter. The events are stored in the
    # request's order, which is the order they are numbered in.
    sql = (
        f"WITH inserted AS ({insert_sql} RETURNING id, owner_id, status, attempts, progress, "  # noqa: S608
        "run_after, batch_position), "
        f"told AS (INSERT INTO {event_table} (owner_id, type, job_id, status, attempt, "
        "progress, waiting_for, created_at) SELECT owner_id, %s, id, status, attempts, "
        "progress, CASE WHEN run_after > %s THEN %s ELSE %s END, %s FROM inserted "
        "ORDER BY batch_position) "
        "SELECT count(*) FROM inserted"
    )
    scheduled, ready = WaitingFor.SCHEDULED_TIME.value, WaitingFor.WORKER.value
    params = [*params, EventType.PENDING.value, now, scheduled, ready, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    for job in jobs:
        job._state.adding, job._state.db = False, using


_INSERTED_FIELDS = list(Job._meta.concrete_fields)


def _tell_created(jobs: list[Job], *, now: datetime, using: str) -> None:
    Event.objects.using(using).bulk_create(
        Event(
            owner_id=job.owner_id,
            type=EventType.PENDING,
            job_id=job.pk,
            status=job.status,
            attempt=job.attempts,
            progress=job.progress,
            waiting_for=events.waiting_for(
                job.status, run_after=job.run_after, now=now, retrying=False
            ),
            created_at=now,
        )
        for job in jobs
    )


def _check_new(jobs: Sequence[Job]) -> None:
    for job in jobs:
        if job.status not in CREATE.targets or job.claim_token is not None:
            raise IllegalTransition(f"A new job starts pending and unclaimed, not {job.status}.")


def apply_all(transition: Transition, jobs: QuerySet[Job], **changes: Any) -> int:
    """Apply a transition to each of `jobs` it applies to; return how many it changed.

    For the bulk transitions (admit, release), and for a single job with conditions of the
    caller's own; built through the ORM on each call.
    """
    if transition.claimed or transition.fence or transition.records:
        raise IllegalTransition(f"{transition} takes one job: use apply().")
    values = _writes(transition, changes)
    return jobs.filter(_from_status(transition)).update(**values, updated_at=timezone.now())


def apply(
    transition: Transition,
    job: Job | uuid.UUID,
    *,
    now: datetime | None = None,
    record: Mapping[str, Any] | None = None,
    **changes: Any,
) -> int:
    """Apply a transition to one job; return 1 if it changed it, 0 if the job was not its.

    `job` is the caller's copy of a claimed job for a transition fenced by the claim, else the
    job or its id. `record` gives the values of the rows the transition inserts (an attempt's
    outcome and error message, a result's output...). `now` stamps updated_at and those rows.
    """
    return _run(transition, job, now=now, record=record or {}, changes=changes, returning=False)[0]


def apply_returning(
    transition: Transition,
    job: Job | uuid.UUID,
    *,
    now: datetime | None = None,
    record: Mapping[str, Any] | None = None,
    **changes: Any,
) -> Job | None:
    """apply(), answering with the job as the transition left it, or None if it did not."""
    return _run(transition, job, now=now, record=record or {}, changes=changes, returning=True)[1]


# Where a transition that inserts rows runs as one statement (a data-modifying WITH, which
# SQLite does not have); elsewhere its writes run in a transaction. A test empties it to
# compare the two on PostgreSQL.
ONE_STATEMENT_VENDORS = frozenset({"postgresql"})


def _run(
    transition: Transition,
    job: Job | uuid.UUID,
    *,
    now: datetime | None,
    record: Mapping[str, Any],
    changes: dict[str, Any],
    returning: bool,
) -> tuple[int, Job | None]:
    given = transition.given
    if record.keys() != given:
        raise IllegalTransition(f"{transition} records {sorted(given)}, not {sorted(record)}.")
    now = now or timezone.now()
    slots = {"id": job.pk if isinstance(job, Job) else job, NOW.name: now, **changes}
    slots.update({f"record_{name}": value for name, value in record.items()})
    if "error_message" in given:
        message = slots["record_error_message"]
        slots["record_error_message"] = message[:MAX_ERROR_MESSAGE_LENGTH]
    if transition.claimed:
        if not isinstance(job, Job) or job.claim_token is None:
            raise IllegalTransition(f"{transition} is fenced by a claim: pass the claimed job.")
        slots[CLAIM_TOKEN.name] = job.claim_token
    _check_values(transition, changes)
    if transition.finishes:
        slots["expires_at"] = _expiry(transition, job, changes, now=now)
    if transition.told:
        slots.update(_event_slots(transition, changes, now=now))
    using = router.db_for_write(Job)
    shape = (transition, using, tuple(sorted(changes)))
    if not transition.records:
        return _execute(_compiled(*shape, "returning" if returning else ""), slots, using)
    if connections[using].vendor in ONE_STATEMENT_VENDORS:
        form = "with" if returning else "with_count"
        count, updated = _execute(_compiled(*shape, form), slots, using)
    else:
        with transaction.atomic(using=using):
            form = "returning" if returning else "returning_read"
            count, updated = _execute(_compiled(*shape, form), slots, using)
            if updated is not None:
                _insert_records(transition, updated, slots, using)
    if count and transition.told:
        events.announce_on_commit(updated.owner_id, slots["event_type"], using=using)
    return count, updated if returning else None


def _expiry(
    transition: Transition, job: Job | uuid.UUID, changes: Mapping[str, Any], *, now: datetime
) -> datetime | None:
    """When the job expires as `transition` leaves it: None unless that is finished."""
    if not isinstance(job, Job):
        # What the rule reads never changes, so it may be read apart from the UPDATE.
        job = Job.objects.filter(pk=job).only(*retention.READS).first()
        if job is None:
            return None  # The UPDATE will find no job either.
    status = changes.get("status") or transition.targets[0]
    return retention.expiry(job, status=status, finished_at=changes.get("completed_at") or now)


def _event_slots(
    transition: Transition, changes: Mapping[str, Any], *, now: datetime
) -> dict[str, str]:
    """The event's type, and what the job waits for, as `transition` leaves it."""
    if transition is PROGRESS:
        return {"event_type": EventType.PROGRESS, "event_waiting_for": ""}
    status = changes.get("status") or transition.targets[0]
    waiting = events.waiting_for(
        status,
        run_after=changes.get("run_after"),
        now=now,
        retrying=IN_PROGRESS in transition.sources,
    )
    return {"event_type": events.EVENT_FOR_STATUS[status], "event_waiting_for": waiting}


def _writes(transition: Transition, changes: Mapping[str, Any]) -> dict[str, Any]:
    """What `transition` writes with the caller's `changes`; IllegalTransition if it may not."""
    _check_names(transition, changes.keys())
    _check_values(transition, changes)
    return {**_fixed_writes(transition), **changes}


def _check_names(transition: Transition, names: Iterable[str]) -> None:
    if not transition.sources:
        raise IllegalTransition(f"{transition} is an INSERT: use job_insert().")
    unknown = set(names) - transition.takes
    if unknown:
        raise IllegalTransition(f"{transition} does not write {sorted(unknown)}.")


def _check_values(transition: Transition, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if hasattr(value, "resolve_expression"):
            raise IllegalTransition(f"{transition}: {name} takes a value; expressions are fixed.")
    status = changes.get("status")
    if status is not None and status not in transition.targets:
        raise IllegalTransition(f"{transition} does not end in {status}.")
    if status is None and transition.changes_status and len(transition.targets) > 1:
        raise IllegalTransition(f"{transition} ends in one of {transition.targets}: say which.")


def _fixed_writes(transition: Transition) -> dict[str, Any]:
    """What the transition writes whatever the caller's values: its status and its sets."""
    if transition.changes_status and len(transition.targets) == 1:
        return {"status": transition.targets[0], **transition.sets}
    return dict(transition.sets)


def _from_status(transition: Transition) -> Q:
    if len(transition.sources) == 1:
        return Q(status=transition.sources[0])
    return Q(status__in=transition.sources)


@dataclass
class _Statement:
    sql: str
    params: list[Any]
    # (position, name, the field that prepares the value, or None if the driver takes it as is)
    slots: list[tuple[int, str, Field | None]]
    # The job's columns its row carries; None if it answers with a count.
    returns: tuple[str, ...] | None
    # Whether that count is a row it answers with (the WITH), not the driver's rowcount.
    counts_in_row: bool = False

    def params_for(self, values: Mapping[str, Any], connection) -> list[Any]:
        # A value that fills several slots (the time, the claim token) is prepared once: the
        # fields of one slot's name have the same type.
        params, prepared = list(self.params), {}
        for index, name, model_field in self.slots:
            if model_field is None:
                params[index] = values[name]
                continue
            if name not in prepared:
                prepared[name] = model_field.get_db_prep_save(values[name], connection)
            params[index] = prepared[name]
        return params


@cache
def _compiled(transition: Transition, using: str, names: tuple[str, ...], form: str) -> _Statement:
    """The transition's SQL for a caller's values named `names`, compiled once by the ORM.

    form: "" (the UPDATE), "returning" (UPDATE ... RETURNING the job), "returning_read" (only
    the columns its rows read), "with" (the UPDATE and the transition's INSERTs as one
    statement, returning the job) or "with_count" (the same, returning how many it updated).
    A completion needs no more than the count, and the whole row would carry the job's
    parameters back for nothing.
    """
    _check_names(transition, names)
    meta = Job._meta
    fence = Q(pk=_Slot("id", meta.pk)) & transition.fence
    if transition.claimed:
        fence &= Q(claim_token=CLAIM_TOKEN)
    jobs = Job.objects.using(using).filter(_from_status(transition), fence)
    writes = _fixed_writes(transition)
    writes.update({name: _Slot(name, meta.get_field(name)) for name in names})
    if transition.finishes:
        writes["expires_at"] = _Slot("expires_at", meta.get_field("expires_at"))
    writes["updated_at"] = _Slot(NOW.name, meta.get_field("updated_at"))
    query = jobs.query.chain(UpdateQuery)
    query.add_update_values(writes)
    sql, params = query.get_compiler(using).as_sql()
    params = list(params)
    returns = {
        "": None,
        "returning": ALL_COLUMNS,
        "returning_read": _read_columns(transition),
        "with": ALL_COLUMNS,
        # A transition that tells its owner needs to know who that is.
        "with_count": ("id", "owner_id") if transition.told else None,
    }[form]
    if form.startswith("returning"):
        sql = f"{sql} RETURNING {_quoted(returns)}"
    elif form.startswith("with"):
        sql = _with_inserts(transition, sql, params, connections[using], returns=returns)
    sql, params = _inline_constants(sql, params)
    connection = connections[using]
    slots = [
        (index, param.name, param.field if _needs_preparing(param.field, connection) else None)
        for index, param in enumerate(params)
        if isinstance(param, _SlotRef)
    ]
    counts_in_row = form == "with_count" and returns is None
    return _Statement(sql, params, slots, returns, counts_in_row=counts_in_row)


def _read_columns(transition: Transition) -> tuple[str, ...]:
    """The job's columns the transition's rows are made from, in the model's order."""
    read = {"id", "claim_token"}
    read.update(column for row in transition.records for column in row.from_job.values())
    return tuple(column for column in ALL_COLUMNS if column in read)


def _quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


# Types psycopg adapts itself, for which Django's preparing on PostgreSQL hands the value on
# unchanged (an aware datetime, a UUID, a string): skipping it saves a claim or a completion a
# few microseconds per value, which together were a measurable share of their CPU.
_AS_IS_ON_POSTGRESQL = {"DateTimeField", "UUIDField", "CharField", "TextField"}


def _needs_preparing(model_field: Field, connection) -> bool:
    as_is = connection.vendor == "postgresql"
    return not (as_is and model_field.get_internal_type() in _AS_IS_ON_POSTGRESQL)


def _inline_constants(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """Write the table's constants (statuses, numbers) into the SQL; keep slots as parameters.

    Each parameter costs the driver its adaptation on every call, and a claim has five
    constants. Only strings and whole numbers, quoted the standard way that both databases
    read (PostgreSQL's standard_conforming_strings, on by default).
    """
    pieces = sql.split("%s")
    if len(pieces) != len(params) + 1:
        return sql, list(params)  # A placeholder this cannot place: leave them all.
    parts, kept = [pieces[0]], []
    for param, piece in zip(params, pieces[1:], strict=True):
        if isinstance(param, int) and not isinstance(param, bool):
            parts.append(str(int(param)))  # The driver's typed wrappers (Int4) included.
        elif isinstance(param, str) and "\\" not in param and "\x00" not in param:
            text = str(param)  # A status's value, not its enum's name.
            parts.append("'" + text.replace("'", "''").replace("%", "%%") + "'")
        else:
            parts.append("%s")
            kept.append(param)
        parts.append(piece)
    return "".join(parts), kept


def _with_inserts(
    transition: Transition,
    update_sql: str,
    params: list[Any],
    connection,
    *,
    returns: tuple[str, ...] | None,
) -> str:
    """The UPDATE and its rows' INSERTs as one statement; adds the INSERTs' params.

    It answers with the job's `returns` columns, or if None with how many rows it updated.
    """
    qn = connection.ops.quote_name
    read = set(_read_columns(transition)).union(returns or ())
    read = _quoted(tuple(column for column in ALL_COLUMNS if column in read))
    sql = f"WITH updated AS ({update_sql} RETURNING {read})"
    for position, row in enumerate(transition.records):
        meta = row.model._meta
        columns, selected = [], []
        for name, value in _row_sources(row, claimed=transition.claimed):
            model_field = meta.get_field(name)
            columns.append(qn(model_field.column))
            if isinstance(value, _FromJob):
                selected.append(f"updated.{qn(value.column)}")
            else:
                selected.append("%s")
                params.append(value)
        condition = " WHERE updated.claim_token IS NOT NULL" if row.if_claimed else ""
        conflicts = " ON CONFLICT DO NOTHING" if row.ignore_conflicts else ""
        # Names and placeholders from the models only; every value is a parameter.
        table, names = qn(meta.db_table), ", ".join(columns)
        sql += (
            f", record_{position} AS (INSERT INTO {table} ({names}) "  # noqa: S608
            f"SELECT {', '.join(selected)} FROM updated{condition}{conflicts})"
        )
    answer = "count(*)" if returns is None else _quoted(returns)
    return f"{sql} SELECT {answer} FROM updated"  # noqa: S608 - built from the models


class _FromJob(NamedTuple):
    column: str


def _row_sources(row: Row, *, claimed: bool) -> list[tuple[str, Any]]:
    """Where each column of `row` comes from: the updated job, a slot, or a constant.

    The one description both ways of inserting it read.
    """
    meta = row.model._meta
    sources: list[tuple[str, Any]] = []
    for name, column in row.from_job.items():
        if name == "claim_token" and claimed:
            # The claim the transition ended, which the UPDATE may have cleared.
            sources.append((name, _SlotRef(CLAIM_TOKEN.name, meta.get_field(name))))
        else:
            sources.append((name, _FromJob(column)))
    sources += [(name, _SlotRef(f"record_{name}", meta.get_field(name))) for name in row.given]
    sources += [(name, _SlotRef(f"event_{name}", meta.get_field(name))) for name in row.computed]
    sources += [(name, _SlotRef(NOW.name, meta.get_field(name))) for name in row.stamped]
    sources += list(row.fixed.items())
    return sources


def _insert_records(transition: Transition, job: Job, slots: Mapping[str, Any], using: str) -> None:
    """Insert the transition's rows after its UPDATE, in the caller's transaction."""
    for row in transition.records:
        if not row.if_claimed or job.claim_token is not None:
            _insert_row(row, job, slots, using=using, claimed=transition.claimed)


def _insert_row(row: Row, job: Job, slots: Mapping[str, Any], *, using: str, claimed: bool) -> None:
    values = {}
    for name, value in _row_sources(row, claimed=claimed):
        if isinstance(value, _FromJob):
            value = getattr(job, _ATTNAMES_BY_COLUMN[value.column])
        elif isinstance(value, _SlotRef):
            value = slots[value.name]
        values[name] = value
    row.model._default_manager.using(using).bulk_create(
        [row.model(**values)], ignore_conflicts=row.ignore_conflicts
    )


def stamp_expiry(jobs: Sequence[Job]) -> int:
    """Give finished jobs that have no expires_at (they finished before retention) theirs.

    Each by the rule a finishing transition follows, from the time it finished. Only jobs
    still finished and unstamped are written: one retried, or finished again, meanwhile is
    left as it is. No transition: the status does not change, nor updated_at.
    """
    for job in jobs:
        finished_at = job.completed_at or job.updated_at
        job.expires_at = retention.expiry(job, status=job.status, finished_at=finished_at)
    unstamped = Job.objects.filter(status__in=Job.FINISHED_STATUSES, expires_at=None)
    return unstamped.bulk_update(jobs, ["expires_at"])


def record_attempt(job: Job, *, outcome: str) -> None:
    """Record how an attempt ended that lost its job before it could (cancelled, superseded).

    No transition: the job's row has moved on already. `job` is the copy its claim loaded.
    """
    slots = {"record_outcome": outcome, "record_error_message": "", NOW.name: timezone.now()}
    _insert_row(attempt_row(), job, slots, using=router.db_for_write(JobAttempt), claimed=False)


def _execute(statement: _Statement, slots: Mapping[str, Any], using: str) -> tuple[int, Job | None]:
    """Run a compiled statement; return its row count, and the job its row carries if any."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, statement.params_for(slots, connection))
        if statement.returns is None:
            return (cursor.fetchone()[0] if statement.counts_in_row else cursor.rowcount), None
        row = cursor.fetchone()
    if row is None:
        return 0, None
    return 1, _job_from_row(row, statement.returns, using)


# Every column of the jobs table, in the order Job.from_db() takes them.
ALL_COLUMNS = tuple(f.column for f in Job._meta.concrete_fields)
_ATTNAMES_BY_COLUMN = {f.column: f.attname for f in Job._meta.concrete_fields}


def _job_from_row(row: Sequence[Any], columns: tuple[str, ...], using: str) -> Job:
    """A job from a row of `columns` (the others deferred), converted as the ORM would.

    What Job.objects.raw() does, less its working out again for every statement which column
    is which field: a third of a claim's CPU.
    """
    connection = connections[using]
    values = list(row)
    for index, column, converters in _job_converters(using, columns):
        for convert in converters:
            values[index] = convert(values[index], column, connection)
    return Job.from_db(using, [_ATTNAMES_BY_COLUMN[column] for column in columns], values)


@cache
def _job_converters(using: str, names: tuple[str, ...]) -> list[tuple[int, Any, list]]:
    """For each column that needs it, the backend's and the field's from-database converters."""
    connection = connections[using]
    by_column = {f.column: f for f in Job._meta.concrete_fields}
    columns = [by_column[name].get_col(Job._meta.db_table) for name in names]
    converters = [
        (
            index,
            column,
            connection.ops.get_db_converters(column) + column.get_db_converters(connection),
        )
        for index, column in enumerate(columns)
    ]
    return [entry for entry in converters if entry[2]]
