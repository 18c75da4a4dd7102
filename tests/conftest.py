import csv
from pathlib import Path

import pytest



def pytest_collection_modifyitems(items):
    """Every test that runs outside a transaction restores the database with serialized_rollback: a flush without
    it recreates the content types (post_migrate), and the next test that restores then collides with them."""
    for item in items:
        mark = item.get_closest_marker("django_db")
        if mark and mark.kwargs.get("transaction") and not mark.kwargs.get("serialized_rollback"):
            raise pytest.UsageError(f"{item.nodeid}: a transactional test needs serialized_rollback=True")


CUSTOMER_HEADER = ["customer_key", "full_name", "gender", "birth_date", "id_type", "id_number", "phone", "email",
                   "address", "city", "postcode", "core_cif", "updated_at"]


@pytest.fixture
def write_feed(tmp_path):
    """Write rows (dicts) as a CSV feed and return its path; columns default to the canonical customer header."""
    counter = {"n": 0}

    def write(rows: list[dict], *, name: str | None = None, header: list[str] | None = None,
              encoding: str = "utf-8") -> Path:
        counter["n"] += 1
        columns = header or CUSTOMER_HEADER + [k for row in rows for k in row if k not in CUSTOMER_HEADER]
        columns = list(dict.fromkeys(columns))
        path = tmp_path / (name or f"feed_{counter['n']}.csv")
        with open(path, "w", newline="", encoding=encoding) as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return path

    return write
