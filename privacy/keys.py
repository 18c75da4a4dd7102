"""Rotating the key of the keyed hashes (README, "Rotating the key of the keyed hashes").

The clear id and card numbers are never stored, so nothing can be hashed again from them. A keyed hash is therefore
a chain (profiles.normalize.keyed_hash): HMAC under the oldest key, then HMAC of that under each later key. Adding a
key to the chain needs only the stored hashes: each becomes HMAC(new key, stored hash), set-based, in one
transaction with the suppressed values and the match keys built from them, while loads and resolutions wait. The
old keys stay in the settings (CDP_PII_KEY_PREVIOUS) to hash new values the same way, but alone they no longer
reproduce any stored hash: whoever holds an old key and a copy of the database cannot test guesses against it.
"""
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from profiles import sql
from profiles.activity import KEYED_KINDS
from profiles.feeds import ERASED_CONTACT_PURPOSE, erased_key_purpose
from profiles.models import CardTransaction, CustomerProfile, PiiKeyState, Source, SourceRecord, SuppressedIdentifier
from profiles.normalize import keyed_hash_step, pii_keys
from profiles.pii_keys import STATE_ID, key_fingerprint
from profiles.resolution import match_keys_recompute

from .models import ErasedIdentifier

# What a card number's token looks like (normalize.tokenize_pan): a source's own token of another shape is its own.
_CARD_NUMBER_TOKEN = re.compile(r"[0-9a-f]{32}")


def _rekey(key: bytes, purpose: str) -> Callable[[str], str]:
    return lambda value: keyed_hash_step(key, value, purpose)


def _rekey_after_type(key: bytes, purpose: str) -> Callable[[str], str]:
    """For "TYPE:hash" values (a suppressed id number): the type stays, the hash is re-keyed."""
    def rekey(value: str) -> str:
        id_type, _, digest = value.partition(":")
        return f"{id_type}:{keyed_hash_step(key, digest, purpose)}"
    return rekey


@dataclass(frozen=True)
class KeyedColumn:
    """A stored column of keyed hashes: where its values are (`where`: fixed SQL over the table's own columns),
    the purpose they were hashed for, and how a value is re-keyed."""

    model: type
    column: str
    purpose: str
    where: str = ""
    rekey: Callable[[bytes, str], Callable[[str], str]] = _rekey
    # Card tokens: only those a card number gave (a source may send its own token, which is not ours to re-key).
    card_tokens_only: bool = False

    @property
    def label(self) -> str:
        return f"{self.model._meta.label_lower}.{self.column}"


# Every stored keyed hash. A new column of keyed hashes must be added here, or a rotation leaves it unmatched.
KEYED_COLUMNS = (
    KeyedColumn(SourceRecord, "id_number_hash", "id"),
    KeyedColumn(CustomerProfile, "id_number_hash", "id"),
    KeyedColumn(SuppressedIdentifier, "value", "id", where="field = 'id_number'", rekey=_rekey_after_type),
    KeyedColumn(SourceRecord, "pan_token", "pan", where="pan_bin IS NOT NULL AND pan_last4 IS NOT NULL",
                card_tokens_only=True),
    KeyedColumn(CardTransaction, "card_token", "pan", where="pan_bin IS NOT NULL AND pan_last4 IS NOT NULL",
                card_tokens_only=True),
)


def _erasure_marker_columns() -> list[KeyedColumn]:
    """The do-not-reload markers of erased people (privacy.rights): id numbers and contacts under one purpose each,
    customer keys under one purpose per source."""
    kinds = ErasedIdentifier.Kind
    columns = [KeyedColumn(ErasedIdentifier, "digest", "id", where=f"kind = '{kinds.ID_NUMBER}'"),
               KeyedColumn(ErasedIdentifier, "digest", ERASED_CONTACT_PURPOSE, where=f"kind = '{kinds.CONTACT}'")]
    source_ids = (ErasedIdentifier.objects.filter(kind=kinds.SOURCE_KEY).values_list("source_id", flat=True)
                  .distinct())
    columns += [KeyedColumn(ErasedIdentifier, "digest", erased_key_purpose(source_id),
                            where=f"kind = '{kinds.SOURCE_KEY}' AND source_id = {int(source_id)}")
                for source_id in source_ids]
    return columns


# Match keys digest identifiers; those of rules naming the id number digest its keyed hash.
KEYED_IDENTIFIERS = ("id_number",)


class PiiKeyRotationError(Exception):
    """The settings do not describe a rotation of the keys the stored hashes are under."""


@dataclass
class PiiKeyRotation:
    """What a rotation rewrote (values per column, match keys), or that the hashes were under these keys already."""

    keys: int
    already_current: bool = False
    rewritten: dict[str, int] = field(default_factory=dict)


def pii_key_rotate() -> PiiKeyRotation:
    """Re-key every stored keyed hash with the newest key of the settings (CDP_PII_KEY), the stored hashes being
    under the earlier ones (CDP_PII_KEY_PREVIOUS): all or nothing, in one transaction. Run again, it does nothing."""
    keys = pii_keys()
    if len(keys) < 2:
        raise PiiKeyRotationError("no key to rotate to: set CDP_PII_KEY to the new key and CDP_PII_KEY_PREVIOUS to "
                                  "the keys in use until now (oldest first, separated by spaces)")
    rotation = PiiKeyRotation(keys=len(keys))
    with transaction.atomic():
        _wait_for_writers()
        state = PiiKeyState.objects.select_for_update().filter(pk=STATE_ID).first()
        if state is not None and state.fingerprint == key_fingerprint(keys):
            rotation.already_current = True
            return rotation
        if state is not None and state.fingerprint != key_fingerprint(keys[:-1]):
            raise PiiKeyRotationError(
                f"the stored keyed hashes are under neither these {len(keys)} keys nor the {len(keys) - 1} of "
                f"CDP_PII_KEY_PREVIOUS: name in it every key used until now, oldest first")
        for column in (*KEYED_COLUMNS, *_erasure_marker_columns()):
            rotation.rewritten[column.label] = rotation.rewritten.get(column.label, 0) + _rekey_column(column, keys[-1])
        for identifier in KEYED_IDENTIFIERS:
            rotation.rewritten[f"match keys ({identifier})"] = match_keys_recompute(identifier=identifier)
        PiiKeyState.objects.update_or_create(pk=STATE_ID, defaults={
            "fingerprint": key_fingerprint(keys), "key_count": len(keys), "updated_at": timezone.now()})
    return rotation


def _wait_for_writers() -> None:
    """Hold the locks of every writer of keyed hashes until the rotation commits: loads of customers and of card
    transactions (per source) and resolutions. A load that waited then checks the keys it was configured with
    (profiles.pii_keys.pii_key_check). SQLite has one writer at a time."""
    if not sql.is_postgres():
        return
    source_ids = list(Source.objects.values_list("pk", flat=True))
    locks = [sql.advisory_lock_key("resolve", 0)]
    locks += [sql.advisory_lock_key("feed", source_id) for source_id in source_ids]
    locks += [sql.advisory_lock_key(f"activity:{kind}", source_id) for kind in KEYED_KINDS for source_id in source_ids]
    for lock in sorted(locks):  # one order for every taker: no deadlock between two rotations
        sql.execute("SELECT pg_advisory_xact_lock(%s)", [lock])


def _rekey_column(column: KeyedColumn, key: bytes) -> int:
    """Replace each distinct value by its re-keyed value through a mapping table: one UPDATE for the column."""
    table, name = sql.quote(column.model._meta.db_table), sql.quote(column.column)
    where = f"{name} IS NOT NULL" + (f" AND {column.where}" if column.where else "")
    values = [value for (value,) in sql.fetch_all(f"SELECT DISTINCT {name} FROM {table} WHERE {where}")]
    if column.card_tokens_only:
        values = [value for value in values if _CARD_NUMBER_TOKEN.fullmatch(value)]
    if not values:
        return 0
    rekey = column.rekey(key, column.purpose)
    sql.create_temp_table("rekeyed_values", "old_value VARCHAR(300) PRIMARY KEY, new_value VARCHAR(300)")
    sql.bulk_insert("rekeyed_values", ("old_value", "new_value"), ((value, rekey(value)) for value in values))
    sql.analyze("rekeyed_values")
    rewritten = sql.execute(f"UPDATE {table} SET {name} = m.new_value FROM rekeyed_values m "
                            f"WHERE {table}.{name} = m.old_value AND {where}")
    sql.drop_temp_table("rekeyed_values")
    return rewritten
