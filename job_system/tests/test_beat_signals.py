"""Beat's SIGTERM and SIGINT: they stop it between ticks, never inside one."""

import os
import signal

import pytest
from celery import beat, signals
from celery.apps.beat import Beat

from job_system import beat as our_beat
from job_system.celery import app


@pytest.fixture
def own_signal_handlers():
    """Give back the test process's SIGTERM and SIGINT handlers afterwards."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_once_beat_runs_asks_its_loop_to_stop_and_raises_nothing(
    own_signal_handlers, signum
):
    # Beat imports the scheduler's module, where the handler is connected, as it starts.
    service = beat.Service(app=app, scheduler_cls=our_beat.DatabaseScheduler)
    Beat(app=app).install_sync_handler(service)  # What `celery beat` does before it starts,
    signals.beat_init.send(sender=service)  # and what the service sends as its loop begins.

    # Celery's handler closed the scheduler and raised SystemExit here, wherever Beat was:
    # inside a publish, that closed the Redis connection being read, the send failed instead,
    # and Beat went on.
    os.kill(os.getpid(), signum)

    assert service._is_shutdown.is_set()  # The loop's own condition; it saves on its way out.
