import itertools

import pytest

from profiles.models import CustomerProfile, FeedBatch, Source, SourceRecord
from django.utils import timezone

_ids = itertools.count(1)


@pytest.fixture
def make_profile():
    def make(**fields) -> CustomerProfile:
        return CustomerProfile.objects.create(public_id=f"PT{next(_ids):08d}", **fields)
    return make


@pytest.fixture
def make_record():
    """A source record of `source` (code) with `customer_key`, resolved to `profile`."""
    def make(*, source: str, customer_key: str, profile: CustomerProfile) -> SourceRecord:
        src = Source.objects.get(code=source)
        batch = FeedBatch.objects.create(source=src, file_name="test.csv", status=FeedBatch.Status.SUCCEEDED)
        return SourceRecord.objects.create(source=src, customer_key=customer_key, profile=profile, row_digest="x",
                                           first_batch=batch, last_batch=batch, loaded_at=timezone.now(),
                                           needs_resolution=False)
    return make
