"""Match keys become 128-bit digests keyed by (record, rule). They are derived data: the table is created anew
and every record is marked for resolution, so the next run rebuilds all keys (and keeps every profile: a
cluster keeps the profile holding most of its records)."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("profiles", "0007_bulk_tables_without_fk_triggers"),
    ]

    operations = [
        migrations.DeleteModel(name="MatchKey"),
        migrations.CreateModel(
            name="MatchKey",
            fields=[
                ("pk", models.CompositePrimaryKey("record_id", "rule_id", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),
                ("record", models.ForeignKey(db_constraint=False, db_index=False,
                                             on_delete=django.db.models.deletion.CASCADE, related_name="match_keys",
                                             to="profiles.sourcerecord")),
                ("rule", models.ForeignKey(db_constraint=False, db_index=False,
                                           on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                           to="profiles.matchrule")),
                ("key_hi", models.BigIntegerField()),
                ("key_lo", models.BigIntegerField()),
            ],
            options={"indexes": [models.Index(fields=["key_hi"], name="matchkey_key_hi")]},
        ),
        # Unapplied, the old table comes back empty: match keys are derived, and every record is still marked.
        migrations.RunSQL(
            "UPDATE profiles_sourcerecord SET needs_resolution = TRUE WHERE needs_resolution = FALSE",
            migrations.RunSQL.noop,
        ),
    ]
