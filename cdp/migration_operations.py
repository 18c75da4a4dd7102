"""Schema operations that build indexes without blocking writes on PostgreSQL and still run on SQLite.

A plain CREATE INDEX holds a lock that blocks every insert and update of the table for the whole build: on the
transaction tables that stops feed loads. PostgreSQL's CONCURRENTLY builds without that lock but cannot run inside a
transaction, so a migration using these operations sets `atomic = False`. SQLite (the demo's database) has no
CONCURRENTLY: there they do what Django's plain operations do. The resulting schema is the same either way.

If a concurrent build fails (a duplicate under a unique index, a cancelled statement), PostgreSQL leaves an INVALID
index behind: drop it (`DROP INDEX CONCURRENTLY name`) and migrate again.
"""
from django.contrib.postgres import operations as postgres_operations
from django.db import migrations
from django.db.models import UniqueConstraint


def _on_postgresql(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


class AddIndexConcurrently(postgres_operations.AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _on_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if _on_postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrently(postgres_operations.RemoveIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _on_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if _on_postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddUniqueConstraintConcurrently(migrations.AddConstraint):
    """A plain-column UniqueConstraint: on PostgreSQL its index is built CONCURRENTLY, then attached as the
    constraint (ADD CONSTRAINT ... USING INDEX takes its lock only for the catalog change, with no scan)."""

    def __init__(self, model_name, constraint):
        if not isinstance(constraint, UniqueConstraint) or not constraint.fields or (
            constraint.condition or constraint.include or constraint.deferrable or constraint.contains_expressions
        ):
            raise ValueError("AddUniqueConstraintConcurrently takes a UniqueConstraint on plain fields only")
        super().__init__(model_name, constraint)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if not _on_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        if schema_editor.connection.in_atomic_block:
            raise RuntimeError(f"{type(self).__name__} needs a migration with atomic = False")
        quote = schema_editor.quote_name
        name, table = quote(self.constraint.name), quote(model._meta.db_table)
        columns = ", ".join(quote(model._meta.get_field(field).column) for field in self.constraint.fields)
        schema_editor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns})")
        schema_editor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")
