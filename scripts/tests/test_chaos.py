import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_killing_workers_and_wiping_redis_loses_and_duplicates_no_job():
    # --quick: 200 jobs, 3 worker SIGKILLs and 1 Redis wipe; about 40 s on two cores.
    completed = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--quick", "--deadline", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [line.split(": ", 1) for line in completed.stdout.splitlines() if ": " in line]
    figures = {name: value.split()[0] for name, value in lines}
    assert figures["accepted"] == "200"
    assert figures["lost"] == "0"
    assert figures["duplicated"] == "0"
    assert figures["kills"] == "3"
    assert figures["redis_wipes"] == "1"
