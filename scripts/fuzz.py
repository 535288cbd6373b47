"""Fuzz the live API from its own OpenAPI schema with schemathesis, as a verified user.

Starts the whole system on 127.0.0.1 (scripts/stack.py), then runs schemathesis' default
checks against /api/schema/: no server errors, responses that match the schema, and invalid
input refused. Exits with schemathesis' exit code.

    python scripts/fuzz.py                      # `make fuzz`: the thorough run
    python scripts/fuzz.py --max-examples 10    # the short run CI does
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.stack import Stack

# Operations that would end the fuzzing user's session half-way through the run. They are
# covered by the accounts tests instead.
SESSION_ENDING = r"^/api/(logout|password/change)/$"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--max-time", type=int, default=600, help="seconds, at most")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fuzz-"))
    # Throttles would answer 429 to a fuzzer's pace; they have tests of their own.
    relaxed = dict.fromkeys(
        (
            "THROTTLE_LOGIN",
            "THROTTLE_REGISTER",
            "THROTTLE_OTP",
            "THROTTLE_OTP_IP_HOUR",
            "THROTTLE_OTP_IP_DAY",
            "THROTTLE_JOB_CREATE",
        ),
        "1000000/min",
    )
    with Stack(workdir, worker_processes=1, beat=False, env=relaxed) as stack:
        token = stack.login(*stack.create_verified_user())
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{stack.base_url}/api/schema/",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(args.max_time),
            "--exclude-path-regex",
            SESSION_ENDING,
            "--workers",
            "2",
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        returncode = subprocess.run(command, check=False).returncode  # noqa: S603
    if returncode == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
