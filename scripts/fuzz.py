"""Fuzz the live API from its own OpenAPI schema with schemathesis, as a verified user.

Starts the whole system on 127.0.0.1 (scripts/stack.py), then runs schemathesis' default
checks against /api/schema/: no server errors, responses that match the schema, and invalid
input refused. schemathesis.toml, at the top of the repository, lists the few statuses the
schema cannot express. Prints one line per figure and exits non-zero unless schemathesis
passed and every figure is 0.

    python scripts/fuzz.py                                   # `make fuzz`: the thorough run
    python scripts/fuzz.py --max-examples 5 --max-time 120   # the short run CI does
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.stack import ROOT, Stack

# Operations that would end the fuzzing user's session half-way through the run. They are
# covered by the accounts tests instead.
SESSION_ENDING = r"^/api/(logout|password/change)/$"
# schemathesis' failure codes, by the figure they count in.
FIGURES = {
    "server_errors": {"ST101", "ST102"},
    # The response is not what the schema says: status, content type, headers or body.
    "schema_violations": {f"ST{code}" for code in range(103, 112)},
    "accepted_invalid": {"ST201", "ST203"},
}
# Headroom for starting the system before the run, and for the run's last requests after it.
TOKEN_MARGIN_MINUTES = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--max-time", type=int, default=600, help="seconds, at most")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fuzz-"))
    report = workdir / "report.json"
    # Throttles would answer 429 to a fuzzer's pace; they have tests of their own.
    env = dict.fromkeys(
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
    # The one access token must outlive the run, or the end of it would only see 401s.
    env["JWT_ACCESS_MINUTES"] = str(args.max_time // 60 + TOKEN_MARGIN_MINUTES)
    with Stack(workdir, beat=False, env=env) as stack:
        token = stack.login(*stack.create_verified_user())
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(ROOT / "schemathesis.toml"),
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
            # One worker: with two, Python 3.11's ast.parse, which Hypothesis calls to describe
            # strategies, can fail with "AST constructor recursion depth mismatch".
            "--workers",
            "1",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        returncode = subprocess.run(command, check=False).returncode  # noqa: S603
    figures = failure_figures(report)
    for name, count in figures.items():
        print(f"{name}: {count}")
    passed = returncode == 0 and not any(figures.values())
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}")
    return 0 if passed else 1


def failure_figures(report: Path) -> dict[str, int]:
    """Count schemathesis' unique failures by figure, from its JSON report.

    Failures outside the three figures (a valid request refused, say) are `other_failures`.
    Without a report, schemathesis did not finish, and every figure is unknown: -1.
    """
    names = [*FIGURES, "other_failures"]
    if not report.exists():
        return dict.fromkeys(names, -1)
    by_code = Counter()
    for failure in json.loads(report.read_text())["failures"]:
        by_code[failure["code"]] += failure["count"]
    figures = {name: sum(by_code[code] for code in codes) for name, codes in FIGURES.items()}
    figures["other_failures"] = sum(by_code.values()) - sum(figures.values())
    return figures


if __name__ == "__main__":
    sys.exit(main())
