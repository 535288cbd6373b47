"""Deleting many rows in statements of a bounded size, for retention."""

from django.db.models import QuerySet


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
