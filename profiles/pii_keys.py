"""Which keys the stored keyed hashes are under, and the guard that keeps a load from mixing two chains of keys.

A keyed hash (normalize.keyed_hash) is a chain of HMACs, one per key of CDP_PII_KEY_PREVIOUS and CDP_PII_KEY. The
database records the fingerprint of the chain its hashes are under (PiiKeyState); a process configured with another
chain, e.g. one not yet restarted after a rotation, would write hashes that match none stored, so its loads refuse.
"""
from django.utils import timezone

from .models import PiiKeyState
from .normalize import keyed_hash_step, pii_keys

STATE_ID = 1
_FINGERPRINT_MESSAGE = "cdp keyed-hash key fingerprint"


class PiiKeyMismatch(Exception):
    """The settings' keys are not those the stored keyed hashes are under."""


def key_fingerprint(keys: tuple[bytes, ...]) -> str:
    """A keyed hash of a fixed message under the chain `keys`: tells chains apart, gives no key away."""
    value = _FINGERPRINT_MESSAGE
    for key in keys:
        value = keyed_hash_step(key, value, "fingerprint")
    return value


def pii_key_check() -> None:
    """Inside a load's transaction: PiiKeyMismatch unless the configured chain is the one the stored hashes are
    under; the first load records its chain."""
    keys = pii_keys()
    fingerprint = key_fingerprint(keys)
    state = PiiKeyState.objects.filter(pk=STATE_ID).values_list("fingerprint", flat=True).first()
    if state is None:
        PiiKeyState.objects.bulk_create([PiiKeyState(pk=STATE_ID, fingerprint=fingerprint, key_count=len(keys),
                                                     updated_at=timezone.now())], ignore_conflicts=True)
        state = PiiKeyState.objects.values_list("fingerprint", flat=True).get(pk=STATE_ID)
    if state != fingerprint:
        raise PiiKeyMismatch(
            f"the stored keyed hashes are under other keys than CDP_PII_KEY and CDP_PII_KEY_PREVIOUS "
            f"({len(keys)} keys) name: after a rotation (manage.py rotate_pii_key) every process needs the new "
            f"settings")
