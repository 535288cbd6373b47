from django.db import migrations, models

from job_system.migration_operations import AddPartialUniqueWithoutBlocking


class Migration(migrations.Migration):
    # CONCURRENTLY on PostgreSQL, outside a transaction: events go on being stored meanwhile.
    # Alone in its migration, so that a build that failed can be dropped and run again.
    atomic = False

    dependencies = [
        ('events', '0002_drop_old_event_indexes'),
    ]

    operations = [
        AddPartialUniqueWithoutBlocking(
            model_name='event',
            constraint=models.UniqueConstraint(condition=models.Q(('seq__isnull', False)), fields=('owner', 'seq'), name='event_unique_owner_seq'),
        ),
    ]
