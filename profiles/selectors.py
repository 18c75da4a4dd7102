"""Reads on profiles shared by the admin, the API and services."""
from .models import CustomerProfile


def profile_get(*, public_id: str) -> tuple[CustomerProfile, bool]:
    """The profile for a public id and whether the id was absorbed by a merge (then the survivor is returned)."""
    profile = CustomerProfile.objects.select_related("merged_into").get(public_id=public_id)
    if profile.merged_into_id is None:
        return profile, False
    # merged_into always points at a live survivor: merges re-point older absorptions (resolution._absorb_profiles).
    return profile.merged_into, True
