from django.db import migrations


class Migration(migrations.Migration):
    """The audit trail moved to the privacy app: state only, the table stays (privacy's 0001 takes it over)."""

    dependencies = [("api", "0002_audit_without_db_constraints")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="AuditRecord")]),
    ]
