"""`manage.py prune_expired_jobs`: what Beat's pruner does, now, from a shell."""

from django.conf import settings
from django.core.management.base import BaseCommand

from jobs import services


class Command(BaseCommand):
    help = (
        "Delete the finished jobs past their expires_at, with their results, attempts and "
        "events, as Beat's pruner does; stamp expires_at on finished jobs from before it."
    )

    def handle(self, *args, **options) -> None:
        counts = services.jobs_prune_expired(pause_ratio=settings.JOB_PRUNE_PAUSE_RATIO)
        self.stdout.write(f"stamped {counts['stamped']} deleted {counts['deleted']}")
