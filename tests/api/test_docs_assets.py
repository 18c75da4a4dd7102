"""The API docs and the site's icon come from the platform itself: nothing is fetched from the internet."""
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db

# Every URL a page makes the browser fetch: script and image sources, stylesheets, icons, preconnects.
_FETCHED = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_only_bundled_assets(staff_client, url):
    response = staff_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()

    fetched = _FETCHED.findall(page)
    assert fetched, page  # the pattern finds the page's scripts
    for asset in fetched:
        assert asset.startswith("/static/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert "https://" not in page and "http://" not in page


def test_the_site_has_an_icon():
    response = Client().get("/favicon.ico")

    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
