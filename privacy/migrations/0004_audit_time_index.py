from django.conf import settings
from django.db import migrations, models

from cdp.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    """Retention finds old audit records by time; the audit table grows with every clear read, so the index is
    built CONCURRENTLY (writes go on meanwhile)."""

    atomic = False

    dependencies = [
        ('api', '0003_auditrecord_to_privacy'),
        ('privacy', '0003_personal_data_permissions'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='auditrecord',
            index=models.Index(fields=['at'], name='audit_time'),
        ),
    ]
