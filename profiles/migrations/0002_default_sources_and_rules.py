from django.db import migrations

SOURCES = [
    # code, name, survivorship priority (lower wins), column mapping, is the CIF authority
    ("core", "Core banking", 10, {"CUST_NO": "customer_key", "CIF": "customer_key", "CIF_NO": "customer_key"}, True),
    ("wealth", "Wealth management", 20, {"CLIENT_ID": "customer_key"}, False),
    ("card", "Credit cards", 30, {"CARDHOLDER_ID": "customer_key"}, False),
]

RULES = [
    # name, priority (applied lowest first), identifiers that must all match
    ("Same valid id number", 10, ["id_number"]),
    ("Core CIF cross-reference", 20, ["core_cif"]),
    ("Phone and birth date", 30, ["phone", "birth_date"]),
    ("Email and name", 40, ["email", "name"]),
    ("Name, birth date and postcode", 50, ["name", "birth_date", "postcode"]),
]


def create(apps, schema_editor):
    Source = apps.get_model("profiles", "Source")
    MatchRule = apps.get_model("profiles", "MatchRule")
    for code, name, priority, mapping, authority in SOURCES:
        Source.objects.get_or_create(
            code=code,
            defaults={"name": name, "priority": priority, "column_mapping": mapping, "is_cif_authority": authority},
        )
    for name, priority, fields in RULES:
        MatchRule.objects.get_or_create(name=name, defaults={"priority": priority, "fields": fields})


class Migration(migrations.Migration):
    dependencies = [("profiles", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
