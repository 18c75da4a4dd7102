"""The CI check on migrations (bin/lint-migrations): every migration of the project's apps passes
django-migration-linter with its warnings treated as errors, and the models have no change without a migration.

The linter reads the SQL each migration would run on the configured database (PostgreSQL in CI) and flags what
locks a loaded table or breaks the running version: CREATE INDEX without CONCURRENTLY, DROP INDEX, a new unique
or NOT NULL constraint, a dropped table or column, RunPython / RunSQL without a reverse. A migration that does such
a thing on purpose is listed in ALLOWED with the linter's code and the reason it is safe; nothing else is excused.
"""
import sys

from django.core.management import call_command
from django_migration_linter import MigrationLinter

PROJECT_APPS = ("profiles", "tags", "segments", "privacy", "api")

# (app, migration) -> {linter code: why this one is safe}
ALLOWED = {
    ("profiles", "0008_matchkey_digest"): {
        "DROP_TABLE": "match keys are derived data: the table is recreated and every record marked for resolution, "
                      "so the next run rebuilds them",
    },
    ("profiles", "0009_profile_lineage_columns"): {
        "DROP_TABLE": "the lineage rows are copied into the profile's columns by the RunSQL just before the drop",
    },
    ("profiles", "0012_profile_public_id_unique_constraint"): {
        "ADD_UNIQUE": "the unique index is built CONCURRENTLY and attached with ADD CONSTRAINT ... USING INDEX, "
                      "which scans nothing",
        "DROP_INDEX": "dropping the old pattern index is a catalog change (no scan), after the new constraint holds",
    },
    ("profiles", "0013_probabilistic_model_provenance"): {
        "NOT_NULL": "the new NOT NULL columns come with a constant default (no table rewrite) on feedbatch and "
                    "probabilisticmodel, which hold one row per load and per trained model",
        "CREATE_INDEX": "the index is on feedbatch.scored_by: one row per load, built in an instant",
        "CREATE_INDEX_EXCLUSIVE": "as CREATE_INDEX: the table is small",
    },
    ("profiles", "0014_consent_history"): {
        "NOT_NULL": "consent.purpose comes with a constant default, which PostgreSQL stores without rewriting the table",
        "ADD_UNIQUE": "the unique index is built CONCURRENTLY and attached with ADD CONSTRAINT ... USING INDEX, "
                      "which scans nothing; the old constraint goes only after it",
    },
}


class ProjectMigrationLinter(MigrationLinter):
    def lint_migration(self, migration):
        self.exclude_migration_tests = list(ALLOWED.get((migration.app_label, migration.name), ()))
        super().lint_migration(migration)


def main() -> int:
    linter = ProjectMigrationLinter(
        include_apps=PROJECT_APPS, all_warnings_as_errors=True, no_cache=True, quiet=["ok", "ignore"],
    )
    linter.lint_all_migrations()
    linter.print_summary()
    failed = linter.has_errors
    try:
        call_command("makemigrations", *PROJECT_APPS, check=True, dry_run=True, verbosity=1)
    except SystemExit:
        print("makemigrations --check: the models have changes without a migration", file=sys.stderr)
        failed = True
    return 1 if failed else 0
