"""What a Celery process loads as it starts: Django's models and the tasks, not the web's URLs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What Celery's Django fixup does as a worker starts, then which of the web's modules it
# brought in.
STARTUP = """
import sys
from job_system.celery import app
from celery.fixups.django import DjangoWorkerFixup
DjangoWorkerFixup(app).validate_models()
app.loader.import_default_modules()
print(sorted(m for m in ("job_system.urls", "drf_spectacular.generators") if m in sys.modules))
"""


def test_a_worker_skips_the_system_checks_and_so_the_urlconf():
    env = {**os.environ, "ENV_FILE": "/dev/null", "DEBUG": "true"}
    env.pop("CELERY_SKIP_CHECKS", None)

    started = subprocess.run(  # noqa: S603
        [sys.executable, "-c", STARTUP], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert started.stdout.strip() == "[]", started.stderr
