import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Takes over api's audit table as it is (state only): no row is copied, no table renamed."""

    initial = True

    dependencies = [
        ("api", "0003_auditrecord_to_privacy"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name="AuditRecord",
                fields=[
                    ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                    ("profile_public_id", models.CharField(max_length=26)),
                    ("fields", models.JSONField(default=list)),
                    ("at", models.DateTimeField(auto_now_add=True)),
                    ("request_id", models.CharField(max_length=64)),
                    ("method", models.CharField(max_length=8)),
                    ("path", models.CharField(max_length=500)),
                    ("api_key", models.ForeignKey(blank=True, db_constraint=False, null=True,
                                                  on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                                  to="api.apikey")),
                    ("user", models.ForeignKey(blank=True, db_constraint=False, null=True,
                                               on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                               to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    "db_table": "api_auditrecord",
                    "ordering": ["-at", "-id"],
                    "indexes": [models.Index(fields=["profile_public_id", "at"], name="audit_profile_time")],
                },
            ),
        ]),
    ]
