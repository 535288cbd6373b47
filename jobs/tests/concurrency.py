"""Run code from several threads at the same moment, as racing processes would."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.signals import pre_delete

# How long a delete lets the racing work run before it goes on (racing_the_delete). Long
# enough for the work to commit, if nothing holds it back.
HEAD_START_SECONDS = 1.5


def run_together(count: int, target: Callable[[], Any], timeout: float = 30) -> list[Any]:
    """Call `target` from `count` threads released together; return what each returned."""
    barrier = threading.Barrier(count)
    results: list[Any] = []

    def body() -> None:
        try:
            barrier.wait()
            results.append(target())
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def start_thread(target: Callable[[], Any]) -> threading.Thread:
    """Start `target` in a thread of its own, as another process would run it."""

    def body() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


@contextmanager
def racing_the_delete(model: type[Model], work: Callable[[], Any]) -> Iterator[list[Any]]:
    """Run `work` in another thread once a delete of a `model` row has collected the rows it
    deletes (its pre_delete signal), as another process adding a row under it would.

    The outcome holds what `work` returned, or the exception it raised.
    """
    outcome: list[Any] = []
    threads = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)

    def collected(sender, instance, **kwargs) -> None:
        if not threads:
            threads.append(start_thread(run))
            threads[0].join(HEAD_START_SECONDS)

    pre_delete.connect(collected, sender=model, weak=False)
    try:
        yield outcome
    finally:
        pre_delete.disconnect(collected, sender=model)
        for thread in threads:
            thread.join(30)


def admin_delete(client, changelist_url: str, pk: Any, how: str):
    """Delete one row in the admin, by its delete page or the delete_selected action."""
    if how == "delete page":
        return client.post(f"{changelist_url}{pk}/delete/", {"post": "yes"})
    return client.post(
        changelist_url, {"action": "delete_selected", "_selected_action": [pk], "post": "yes"}
    )
