"""The Celery application shared by workers, Beat and the web processes that publish."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "job_system.settings")

app = Celery("job_system")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
