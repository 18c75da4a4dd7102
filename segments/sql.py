"""Hand-written, parameterised SQL of the segment engine: INSERT … SELECT of a result, diffs, locks.

The SELECT of a result comes from the ORM (`QuerySet.query.sql_with_params()`), so values stay parameters.
Table names come from model metadata. Works on PostgreSQL and SQLite (the embedded default).
"""
from contextlib import contextmanager

from django.core.exceptions import EmptyResultSet
from django.db import connection

from profiles import sql as profiles_sql
from tags.models import TagAssignment

from .models import SegmentEvent, SegmentMember

MEMBER = SegmentMember._meta.db_table
EVENT = SegmentEvent._meta.db_table
ASSIGNMENT = TagAssignment._meta.db_table

# Holdout: a fixed hash of (profile id, segment id) into 10,000 buckets; a profile is in the control group when its
# bucket is below percent x 100. Stable across refreshes, and raising the percentage only adds profiles to it.
HOLDOUT_BUCKET_SQL = "((m.id * 2654435761 + %s * 40503) %% 1000003) %% 10000"


def holdout_bucket(*, profile_id: int, segment_id: int) -> int:
    return ((profile_id * 2654435761 + segment_id * 40503) % 1000003) % 10000


def _execute(statement: str, params: list) -> int:
    with connection.cursor() as cur:
        cur.execute(statement, params)
        return cur.rowcount


def rule_query_settings() -> None:
    """For the current transaction (must run inside one): no JIT, and work_mem for the aggregates of activity nodes.

    The planner's cost estimate of a rule with EXISTS under OR is far above its real cost, which triggers JIT
    compilation that takes longer than the query itself (245 of 345 ms measured on 200k profiles); and an activity
    aggregate over a million profiles spills to disk in batches with the server's 4MB."""
    if profiles_sql.is_postgres():
        _execute("SET LOCAL jit = off", [])
        profiles_sql.set_work_mem()


def _select_ids(queryset) -> tuple[str, tuple] | None:
    """The SELECT of the queryset's profile ids; None when the ORM finds it selects nobody without asking the
    database (it then raises EmptyResultSet instead of writing SQL): the result is empty, not an error."""
    try:
        return queryset.values("id").query.sql_with_params()
    except EmptyResultSet:
        return None


def insert_members(*, queryset, segment_id: int, version: int, holdout_basis_points: int) -> int:
    """Write the profiles of `queryset` (its first column is the profile id) as `version` of the segment."""
    select = _select_ids(queryset)
    if select is None:
        return 0
    select_sql, select_params = select
    source, source_params = f"({select_sql})", list(select_params)
    if profiles_sql.is_postgres():
        rule_query_settings()
        # PostgreSQL runs the SELECT of an INSERT … SELECT without parallel workers, but CREATE TABLE AS with
        # them: evaluating the rule into a temp table first halves the time of a rule that scans all profiles.
        _execute("DROP TABLE IF EXISTS segment_result", [])
        _execute(f"CREATE TEMP TABLE segment_result ON COMMIT DROP AS {select_sql}", select_params)
        source, source_params = "segment_result", []
    return _execute(
        f"INSERT INTO {MEMBER} (segment_id, version, profile_id, in_holdout) "
        f"SELECT %s, %s, m.id, {HOLDOUT_BUCKET_SQL} < %s FROM {source} m",
        [segment_id, version, segment_id, holdout_basis_points, *source_params],
    )


def record_changes(*, segment_id: int, old_version: int, new_version: int, kind: str, at, job_id: int | None) -> int:
    """Events for the profiles of one version missing from the other: `entered` (new minus old) or `exited`."""
    present, absent = (new_version, old_version) if kind == SegmentEvent.Kind.ENTERED else (old_version, new_version)
    # EXCEPT is a hash or sort set operation whatever the statistics say; a NOT EXISTS anti-join planned on a
    # member table not yet analysed became a nested loop of seq scans (5 s for 5,000 members).
    return _execute(
        f"INSERT INTO {EVENT} (segment_id, profile_id, kind, at, job_id) "
        f"SELECT %s, d.profile_id, %s, %s, %s FROM ("
        f"SELECT profile_id FROM {MEMBER} WHERE segment_id = %s AND version = %s "
        f"EXCEPT SELECT profile_id FROM {MEMBER} WHERE segment_id = %s AND version = %s) d",
        [segment_id, kind, at, job_id, segment_id, present, segment_id, absent],
    )


def insert_rule_tag_assignments(*, queryset, tag_id: int, at) -> int:
    select = _select_ids(queryset)
    if select is None:
        return 0
    select_sql, select_params = select
    rule_query_settings()
    # Profiles that hold the tag already are skipped by the (profile, tag) unique constraint, not by NOT EXISTS: with
    # the table's statistics saying it is empty (a tag's first refresh), the planner runs NOT EXISTS as a nested loop
    # that scans the table once per profile while this very statement fills it, quadratic in the profiles.
    # `WHERE true` lets SQLite parse ON CONFLICT after a SELECT.
    return _execute(
        f"INSERT INTO {ASSIGNMENT} (profile_id, tag_id, source, assigned_at, assigned_by, expires_at) "
        f"SELECT m.id, %s, %s, %s, %s, NULL FROM ({select_sql}) m WHERE true "
        f"ON CONFLICT (profile_id, tag_id) DO NOTHING",
        [tag_id, TagAssignment.Source.RULE, at, "rule", *select_params],
    )


@contextmanager
def advisory_lock(kind: str, object_id: int):
    """Serialise work on one object across workers. PostgreSQL: a session lock, released even if the worker dies
    (its connection closes). SQLite serialises writers itself and runs one process, so it needs none."""
    if not profiles_sql.is_postgres():
        yield
        return
    key = profiles_sql.advisory_lock_key(kind, object_id)
    _execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        _execute("SELECT pg_advisory_unlock(%s)", [key])
