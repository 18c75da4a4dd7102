"""A profile's timeline: events of every system in time order, newest first, paged with `before`, in a constant
number of queries."""
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from profiles.models import CustomerProfile
from profiles.selectors import profile_timeline
from tests.profiles.test_metrics import Bank, at, profile

pytestmark = pytest.mark.django_db


def test_events_of_all_systems_newest_first_and_paged(django_assert_num_queries):
    bank = Bank()
    p = profile()
    bank.customer(p, "core", "C1")
    bank.customer(p, "card", "K1")
    bank.customer(p, "wealth", "W1")
    bank.account("C1", "savings", "100", dt.date(2026, 1, 5), closed=dt.date(2026, 3, 1))
    bank.txn("C1", at(2026, 2, 10), "15000", "salary_credit", channel="system")
    bank.card("K1", at(2026, 2, 11), "88")
    bank.holding("W1", "fund", "5000", as_of=dt.date(2026, 2, 20))
    bank.risk("W1", "C3", dt.date(2026, 1, 20))
    absorbed = profile()
    CustomerProfile.objects.filter(pk=absorbed.pk).update(status="merged", merged_into=p, merged_at=at(2026, 2, 1))
    other = profile()
    bank.customer(other, "core", "C9")
    bank.txn("C9", at(2026, 2, 12), "-1", "payment")  # someone else's

    with django_assert_num_queries(2):
        events = profile_timeline(profile=p, limit=100)
    loaded = [e for e in events if e["event"] == "record_loaded"]
    assert {e["reference"] for e in loaded} == {"C1", "K1", "W1"}
    history = [(e["event"], e["detail"]) for e in events if e["event"] != "record_loaded"]
    assert history == [("account_closed", "savings"), ("holding", "fund"), ("card_transaction", ""),
                       ("transaction", "salary_credit"), ("profile_merged", None), ("risk_assessment", "C3"),
                       ("account_opened", "savings")]
    card = next(e for e in events if e["event"] == "card_transaction")
    assert (card["source"], Decimal(card["amount"]), card["currency"]) == ("card", Decimal("88"), "CNY")

    older = profile_timeline(profile=p, limit=2, before=at(2026, 2, 11))
    assert [e["event"] for e in older] == ["transaction", "profile_merged"]
    assert profile_timeline(profile=profile(), limit=10) == []
    assert all(e["at"] <= timezone.now() for e in events)
