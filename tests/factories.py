"""Test data builders."""
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_resident_id(birth: date, *, region: str = "110105", sequence: int = 123) -> str:
    """A checksum-valid 18-character CN resident id number."""
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS)) % 11]


def customer(key: str, **fields) -> dict:
    """A customer-feed row; unspecified columns stay empty."""
    return {"customer_key": key, **fields}
