"""Deleting rows: one with what refers to it, safely beside writers; many, for retention."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction
from django.db.models import Model, QuerySet


def delete_locked(instance: Model) -> None:
    """Delete `instance` with the rows that refer to it, having locked its row first.

    Django collects the referring rows, then deletes them and the instance: a row that
    another process added in between failed the delete's COMMIT on its foreign key (a 500).
    With the row locked FOR UPDATE before the collection, what adds rows under it either
    committed first, and is collected, or waits for the lock (a FOR NO KEY UPDATE of its
    own, or SKIP LOCKED) and then finds the row gone. A row already gone is left so.
    """
    with transaction.atomic(using=instance._state.db):
        rows = type(instance)._base_manager.using(instance._state.db)
        if rows.select_for_update().filter(pk=instance.pk).exists():
            instance.delete()


def delete_in_batches(rows: QuerySet, *, batch_size: int) -> int:
    """Delete `rows`, at most `batch_size` per statement, in the caller's transaction.

    Only these rows: QuerySet.delete() would cascade to the rows that refer to them, loading
    them into memory and deleting them with statements of any size. Callers delete those
    first, in batches of their own. Returns how many rows were deleted.
    """
    model, using = rows.model, rows.db
    total = 0
    while True:
        # One statement: DELETE ... WHERE pk IN (SELECT pk ... LIMIT batch_size).
        batch = model._base_manager.using(using).filter(
            pk__in=rows.order_by().values("pk")[:batch_size]
        )
        deleted = batch._raw_delete(using) or 0  # None: a WHERE nothing can match (IN ()).
        total += deleted
        if deleted < batch_size:
            return total


@contextmanager
def foreign_keys_checked_per_statement(using: str) -> Iterator[None]:
    """Within the caller's transaction, check foreign keys as each statement ends.

    Django declares them DEFERRABLE INITIALLY DEFERRED, so PostgreSQL checks every row a
    transaction deleted at its COMMIT: two index lookups per deleted row and foreign key that
    refers to its table, all in the one COMMIT statement, which holds every lock the
    transaction took while it runs them. Checked per statement, each DELETE pays for its own
    rows, so statements of a bounded size stay bounded, and the COMMIT has nothing left to do.
    The caller deletes the referring rows before the rows they refer to. Django's default
    is restored at the end, for the rest of an enclosing transaction. SQLite checks as it goes.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def commit_without_waiting_for_the_disk(using: str) -> None:
    """Let the caller's transaction commit without waiting for its WAL to reach the disk.

    For deleting expired rows only: a crash may forget the last few such transactions (a
    fraction of a second's worth), which the next run deletes again; never a part of one.
    Without it, the COMMIT of a batch, which holds the batch's locks, waited for an fsync of
    the batch's WAL, behind every other transaction's: 186 ms once (scripts/bench_prune.py).
    The setting ends with the transaction, so only the outermost one sets it: an enclosing
    transaction's other writes keep waiting for the disk. SQLite: nothing to do.
    """
    connection = connections[using]
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
