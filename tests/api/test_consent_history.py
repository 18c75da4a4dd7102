"""The consent endpoint writes the consent history (profiles.models.ConsentEvent), purpose included."""
import pytest

from profiles.models import ConsentEvent, CustomerProfile

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann():
    return CustomerProfile.objects.create(public_id="PCONSENT1", city="Hangzhou")


def test_the_api_writes_the_history(ann, api_client):
    client = api_client(scopes=["profiles:write"])

    client.put(f"/api/v1/profiles/{ann.public_id}/consent/email/", {"granted": True}, format="json")
    response = client.put(f"/api/v1/profiles/{ann.public_id}/consent/email/",
                          {"granted": False, "source": "call-centre", "purpose": "third_party"}, format="json")
    bad = client.put(f"/api/v1/profiles/{ann.public_id}/consent/email/", {"granted": True, "purpose": "x"},
                     format="json")

    assert response.status_code == 200 and bad.status_code == 400 and "purpose" in bad.json()["details"]
    assert list(ConsentEvent.objects.filter(profile=ann).values_list("purpose", "granted", "source")) == [
        ("marketing", True, "api"), ("third_party", False, "call-centre")]
