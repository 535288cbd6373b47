import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killing_workers_and_wiping_redis_loses_no_job_and_no_terminal_state_s_webhook():
    # --quick: 200 jobs, 3 worker SIGKILLs and 1 Redis wipe, with a webhook receiver that
    # fails 30% of requests; about 90 s on two cores, half of it waiting for the last retries.
    completed = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--quick", "--deadline", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [line.split(": ", 1) for line in completed.stdout.splitlines() if ": " in line]
    figures = {name: value.split()[0] for name, value in lines}
    assert figures["accepted"] == "200"
    assert figures["lost"] == "0"
    assert figures["duplicated"] == "0"
    assert figures["kills"] == "3"
    assert figures["redis_wipes"] == "1"
    assert figures["told"] == figures["terminal"] == "200"
    assert figures["told_missing"] == "0"
    assert int(figures["callbacks"]) > 0
    assert figures["callbacks_told"] == figures["callbacks"]
    assert figures["events_with_more_than_one_webhook_id"] == "0"
    assert figures["bad_signatures"] == "0"
    assert figures["wrong_status"] == "0"
    assert int(figures["deliveries_rejected"]) > 0
