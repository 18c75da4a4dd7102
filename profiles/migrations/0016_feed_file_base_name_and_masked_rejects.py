"""Batches keep their file's base name only, and the rejected rows already stored get their personal fields masked
(new ones are masked before they are written: privacy.policy.mask_raw_row). Both in batches of rows, by id."""
import re

from django.db import migrations, models
from django.db.models import Q

BATCH_ROWS = 5000


def _in_batches(queryset):
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk")[:BATCH_ROWS])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def keep_base_names(apps, schema_editor):
    FeedBatch = apps.get_model("profiles", "FeedBatch")
    with_folder = FeedBatch.objects.filter(Q(file_name__contains="/") | Q(file_name__contains="\\")).only("file_name")
    for batches in _in_batches(with_folder):
        for batch in batches:
            batch.file_name = re.split(r"[\\/]", batch.file_name)[-1]
        FeedBatch.objects.bulk_update(batches, ["file_name"])


def mask_stored_rejects(apps, schema_editor):
    from privacy.policy import PII_FIELDS, mask_fields

    RejectedRow = apps.get_model("profiles", "RejectedRow")
    personal = RejectedRow.objects.filter(raw__has_any_keys=list(PII_FIELDS)).only("raw")
    for rows in _in_batches(personal):
        for row in rows:
            row.raw = mask_fields(dict(row.raw))
        RejectedRow.objects.bulk_update(rows, ["raw"])


class Migration(migrations.Migration):

    dependencies = [
        ('profiles', '0015_pii_key_state'),
    ]

    operations = [
        migrations.AlterField(
            model_name='feedbatch',
            name='file_name',
            field=models.CharField(help_text="The file's base name, never the folder it is stored in", max_length=500),
        ),
        migrations.AlterField(
            model_name='rejectedrow',
            name='raw',
            field=models.JSONField(default=dict, help_text='The row as read, its personal fields masked '
                                                           '(privacy.policy.mask_raw_row): never stored in clear'),
        ),
        migrations.RunPython(keep_base_names, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(mask_stored_rejects, migrations.RunPython.noop, elidable=True),
    ]
