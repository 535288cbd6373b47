"""requirements.txt alone starts every process of the service.

The tests' own environment holds requirements-dev.txt as well, whose tools bring packages
that the runtime imports without declaring them: kombu's Redis transport needs `packaging`,
which only kombu's `redis` extra installs and pytest happened to. A deployment that installed
requirements.txt alone could start no Celery process. So this installs it into a fresh venv
and imports there what each process of the Procfile imports.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# What the Procfile's processes load: Django with every app, each Celery process's tasks
# and its Redis transport, Beat's scheduler, gunicorn's and uvicorn's applications, Flower.
IMPORTS = """
import django
django.setup()
from job_system.celery import app
app.loader.import_default_modules()
import kombu.transport.redis
import job_system.beat
import job_system.wsgi, events.asgi
import gunicorn.app.wsgiapp, uvicorn, flower.command
print("imported")
"""


@pytest.mark.timeout(900)
def test_the_runtime_requirements_alone_start_every_process(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
    python = str(venv / "bin" / "python")
    subprocess.run(  # noqa: S603
        [python, "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements.txt")],
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "job_system.settings",
    }
    env.pop("PYTHONHOME", None)

    imported = subprocess.run(  # noqa: S603
        [python, "-c", IMPORTS], cwd=ROOT, env=env, capture_output=True, text=True
    )
    checked = subprocess.run(  # noqa: S603
        [python, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert imported.stdout.strip().endswith("imported"), imported.stderr
    assert checked.returncode == 0, checked.stderr
