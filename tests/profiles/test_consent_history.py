"""Consent history: every decision is kept (granted or withdrawn, channel, purpose, source, time), the current state is
derived from it (the latest decision by when it was taken), and exports read that state at the moment they run."""
import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from profiles.models import Consent, ConsentEvent, CustomerProfile
from profiles.services import consent_set
from segments.models import Segment
from segments.selectors import segment_members_for_channel
from segments.services import segment_refresh, segment_save

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann():
    return CustomerProfile.objects.create(public_id="PCONSENT1", city="Hangzhou")


def _state(profile, purpose="marketing") -> dict:
    return {c.channel: (c.granted, c.source) for c in Consent.objects.filter(profile=profile, purpose=purpose)}


def test_every_decision_is_kept_and_the_latest_is_the_current_state(ann):
    now = timezone.now()
    consent_set(profile=ann, channel="sms", granted=True, source="core", at=now - dt.timedelta(days=3))
    consent_set(profile=ann, channel="sms", granted=False, source="app", at=now - dt.timedelta(days=1))
    # A decision taken before the latest one, delivered late: kept in the history, the state does not change.
    consent_set(profile=ann, channel="sms", granted=True, source="branch", at=now - dt.timedelta(days=2))

    history = list(ConsentEvent.objects.filter(profile=ann).values_list("granted", "source", "channel", "purpose"))
    assert history == [(True, "core", "sms", "marketing"), (True, "branch", "sms", "marketing"),
                       (False, "app", "sms", "marketing")]
    assert _state(ann) == {"sms": (False, "app")}
    assert Consent.objects.get(profile=ann).updated_at == now - dt.timedelta(days=1)


def test_purposes_are_decided_separately(ann):
    consent_set(profile=ann, channel="email", granted=True, source="app", purpose="third_party")

    assert _state(ann) == {}
    assert _state(ann, "third_party") == {"email": (True, "app")}
    with pytest.raises(ValueError, match="unknown purpose"):
        consent_set(profile=ann, channel="email", granted=True, source="app", purpose="everything")
    assert ConsentEvent.objects.count() == 1


def test_a_channel_export_reads_the_consent_in_force_when_it_runs(ann):
    segment = segment_save(segment=Segment(name="Hangzhou", slug="hz",
                                           rule={"field": "city", "op": "eq", "value": "Hangzhou"}))
    segment_refresh(segment=segment)
    consent_set(profile=ann, channel="sms", granted=True, source="core")
    assert list(segment_members_for_channel(segment=segment, channel="sms")) == [ann]

    consent_set(profile=ann, channel="sms", granted=False, source="app")
    assert list(segment_members_for_channel(segment=segment, channel="sms")) == []
    # Consent for another purpose does not let marketing contact the customer.
    consent_set(profile=ann, channel="sms", granted=True, source="app", purpose="profiling")
    assert list(segment_members_for_channel(segment=segment, channel="sms")) == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_migration_gives_each_existing_consent_one_history_row():
    executor = MigrationExecutor(connection)
    before = [("profiles", "0013_probabilistic_model_provenance")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    profile = old.get_model("profiles", "CustomerProfile").objects.create(public_id="PMIG1")
    decided = timezone.now() - dt.timedelta(days=5)
    for channel, granted in (("sms", True), ("email", False)):
        old.get_model("profiles", "Consent").objects.create(profile_id=profile.pk, channel=channel, granted=granted,
                                                            source="core", updated_at=decided)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert sorted(ConsentEvent.objects.values_list("channel", "purpose", "granted", "source", "at")) == [
        ("email", "marketing", False, "core", decided), ("sms", "marketing", True, "core", decided)]
    assert _state(CustomerProfile.objects.get(public_id="PMIG1")) == {"sms": (True, "core"), "email": (False, "core")}
