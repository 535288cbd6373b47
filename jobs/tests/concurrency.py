"""Run code from several threads at the same moment, as racing processes would."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


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
