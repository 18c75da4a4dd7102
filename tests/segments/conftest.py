import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from profiles.models import CustomerProfile
from tests.tags.conftest import make_profile, make_record  # noqa: F401  (shared fixtures)

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.fixture
def people(make_profile):
    """Four live profiles and one absorbed by a merge, with values chosen for hand-computed answers."""
    ann = make_profile(full_name="Ann Lee", gender="F", birth_date=dt.date(1950, 1, 1), city="Shanghai",
                       email="ann@qq.com", record_count=3)
    bob = make_profile(full_name="Bob Wu", gender="M", birth_date=dt.date(1990, 6, 15), city="Beijing",
                       email="bob@163.com", record_count=1)
    cai = make_profile(full_name="Cai Xu", gender="F", birth_date=dt.date(1985, 3, 1), city="Shanghai",
                       email=None, record_count=2)
    dee = make_profile(full_name="Dee", gender=None, birth_date=None, city="", email="DEE@QQ.COM", record_count=1)
    make_profile(full_name="Eve Merged", gender="F", city="Shanghai", status="merged", merged_into=ann)
    # first seen: Ann 400 days ago, Bob 20, Cai 31, Dee today
    for profile, days in ((ann, 400), (bob, 20), (cai, 31), (dee, 0)):
        CustomerProfile.objects.filter(pk=profile.pk).update(created_at=NOW - dt.timedelta(days=days))
    return {"ann": ann, "bob": bob, "cai": cai, "dee": dee}
