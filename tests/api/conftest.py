"""API test fixtures: clients holding a key with chosen scopes, or a staff session."""
import itertools

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from rest_framework.test import APIClient

from api.keys import api_key_create

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_client(db):
    """`api_client(scopes=[...])`: an APIClient sending a new key with those scopes; `.api_key` is the key row."""
    def make(*, scopes=(), **key_fields) -> APIClient:
        api_key, key = api_key_create(name=f"test-key-{next(_names)}", scopes=scopes,
                                      expires_in_days=key_fields.pop("expires_in_days", None))
        if key_fields:
            type(api_key).objects.filter(pk=api_key.pk).update(**key_fields)
            api_key.refresh_from_db()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        client.api_key = api_key
        client.key = key
        return client
    return make


def grant(user, *permissions: str):
    """Give a person Django permissions named "app_label.codename"; returns the user as read anew (no cache)."""
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def staff_user(db):
    """Staff with no permission: signs in, sees no API scope and no personal data clear."""
    return get_user_model().objects.create_user("staff", password="x", is_staff=True)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_login(staff_user)
    return client
