"""The tag admin: one tag added to one profile with the assignment add form, as the service would add it; rule and
system tags, which the platform sets, cannot be added, changed or removed there by hand."""
import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from tags.models import TagAssignment, TagDefinition

pytestmark = pytest.mark.django_db

ADD = reverse("admin:tags_tagassignment_add")


@pytest.fixture
def tags():
    return {kind: TagDefinition.objects.create(code=f"{kind}-tag", name=kind, kind=kind,
                                               rule={"field": "city", "op": "eq", "value": "x"} if kind == "rule"
                                               else None)
            for kind in ("manual", "rule", "system")}


def test_the_add_form_tags_one_profile_as_the_person_signed_in(admin_client, admin_user, make_profile, tags):
    profile = make_profile()
    expires = timezone.localtime() + dt.timedelta(days=30)

    response = admin_client.post(ADD, {"profile": profile.pk, "tag": tags["manual"].pk,
                                       "expires_at_0": expires.date().isoformat(),
                                       "expires_at_1": expires.strftime("%H:%M:%S")})

    assert response.status_code == 302, response.content.decode()[-2000:]
    assignment = TagAssignment.objects.get(profile=profile)
    assert assignment.tag == tags["manual"]
    assert (assignment.source, assignment.assigned_by) == ("manual", admin_user.get_username())
    assert timezone.now() - assignment.assigned_at < dt.timedelta(minutes=1)
    assert abs(assignment.expires_at - expires) < dt.timedelta(seconds=1)

    again = admin_client.post(ADD, {"profile": profile.pk, "tag": tags["manual"].pk})
    assert again.status_code == 200 and "already exists" in again.content.decode()
    assert TagAssignment.objects.filter(profile=profile).count() == 1


def test_the_add_form_offers_manual_tags_and_live_profiles_only(admin_client, make_profile, tags):
    profile = make_profile()
    merged = make_profile(status="merged", merged_into=profile)
    form = admin_client.get(ADD).content.decode()
    assert "manual-tag" in form and "rule-tag" not in form and "system-tag" not in form

    for tag in (tags["rule"], tags["system"]):
        refused = admin_client.post(ADD, {"profile": profile.pk, "tag": tag.pk})
        assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    refused = admin_client.post(ADD, {"profile": merged.pk, "tag": tags["manual"].pk})
    assert refused.status_code == 200 and "profile" in refused.context["adminform"].form.errors
    assert not TagAssignment.objects.exists()


def test_assignments_the_platform_made_cannot_be_changed_or_deleted_by_hand(admin_client, make_profile, tags):
    profile = make_profile()
    system = TagAssignment.objects.create(profile=profile, tag=tags["system"], source="system",
                                          assigned_at=timezone.now(), assigned_by="system")
    manual = TagAssignment.objects.create(profile=profile, tag=tags["manual"], source="manual",
                                          assigned_at=timezone.now(), assigned_by="alice")
    change = reverse("admin:tags_tagassignment_change", args=[system.pk])
    admin_client.post(change, {"profile": profile.pk, "tag": tags["system"].pk, "expires_at_0": "2020-01-01",
                               "expires_at_1": "00:00:00"})
    assert admin_client.post(reverse("admin:tags_tagassignment_delete", args=[system.pk]),
                             {"post": "yes"}).status_code == 403
    admin_client.post(reverse("admin:tags_tagassignment_changelist"),
                      {"action": "delete_selected", "_selected_action": [system.pk, manual.pk], "post": "yes"})
    system.refresh_from_db()
    assert system.expires_at is None
    assert TagAssignment.objects.count() == 2  # a selection with a platform assignment deletes nothing

    admin_client.post(reverse("admin:tags_tagassignment_delete", args=[manual.pk]), {"post": "yes"})
    assert list(TagAssignment.objects.values_list("tag__code", flat=True)) == ["system-tag"]
