from django.db import migrations, models

from job_system.migration_operations import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    # CONCURRENTLY on PostgreSQL, outside a transaction: submissions go on meanwhile. Alone in
    # their migration, so that a build that failed can be dropped and run again.
    atomic = False

    dependencies = [
        ('jobs', '0011_expires_at'),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name='job',
            index=models.Index(condition=models.Q(('expires_at__isnull', False)), fields=['expires_at'], name='job_expiring'),
        ),
        AddIndexWithoutBlocking(
            model_name='job',
            index=models.Index(condition=models.Q(('expires_at', None), ('status__in', ['completed', 'failed', 'cancelled'])), fields=['completed_at'], name='job_finished_unstamped'),
        ),
    ]
