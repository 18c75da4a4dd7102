"""Subject access and erasure as actions of the profile admin, each behind its own Django permission."""
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from privacy.models import AuditRecord, ErasureLog
from profiles.models import CustomerProfile

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/profiles/customerprofile/"


@pytest.fixture
def ann():
    return CustomerProfile.objects.create(public_id="PADMIN1", full_name="李安", phone="+8613812875678")


def _staff(client, *codenames):
    user = get_user_model().objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_customerprofile"),
                              *Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def _actions(client) -> set[str]:
    return {name for name, _ in client.get(CHANGELIST).context["action_form"].fields["action"].choices}


def test_without_the_permissions_the_actions_are_not_offered_and_do_nothing(client, ann):
    _staff(client)

    assert not {"download_subject_access", "erase"} & _actions(client)
    client.post(CHANGELIST, {"action": "download_subject_access", "_selected_action": [ann.pk]})
    client.post(CHANGELIST, {"action": "erase", "_selected_action": [ann.pk], "apply": "1", "reason": "DSR-1"})

    assert CustomerProfile.objects.filter(pk=ann.pk).exists() and not AuditRecord.objects.exists()


def test_subject_access_downloads_the_file_and_audits_the_person(client, ann):
    user = _staff(client, "subject_access")

    assert "download_subject_access" in _actions(client) and "erase" not in _actions(client)
    response = client.post(CHANGELIST, {"action": "download_subject_access", "_selected_action": [ann.pk]})

    assert response["Content-Disposition"] == 'attachment; filename="subject-access-PADMIN1.json"'
    assert json.loads(response.content)["profile"]["phone"] == "+8613812875678"
    assert AuditRecord.objects.get().user_id == user.pk


def test_erasure_asks_for_a_reason_then_erases(client, ann):
    _staff(client, "erase_subject")

    asked = client.post(CHANGELIST, {"action": "erase", "_selected_action": [ann.pk]})
    assert asked.status_code == 200 and b'name="reason"' in asked.content
    assert CustomerProfile.objects.filter(pk=ann.pk).exists()

    client.post(CHANGELIST, {"action": "erase", "_selected_action": [ann.pk], "apply": "1", "reason": "DSR-3"})

    assert not CustomerProfile.objects.filter(pk=ann.pk).exists()
    assert ErasureLog.objects.values_list("erased_by", "reason").get() == ("admin:clerk", "DSR-3")
