"""Rate strings of the per-key limit: "100/s", "6000/min", "100000/hour", "100/10s"."""
import re

from django.core.exceptions import ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"(\d+)/(\d*)([smhd])[a-z]*", re.ASCII)


def parse_rate(rate: str) -> tuple[int, int]:
    """(requests, period in seconds): "100/s" -> (100, 1); the unit's first letter counts ("min" is minutes)."""
    match = _RATE.fullmatch(rate.strip())
    if match is None or match[2] in ("0", "00"):
        raise ValueError(f"bad rate {rate!r}: expected e.g. '100/s', '6000/min'")
    return int(match[1]), _UNITS[match[3]] * int(match[2] or 1)


def validate_rate(rate: str) -> None:
    """Model and form validator: a rate that parse_rate accepts (else every request of the key would fail)."""
    try:
        parse_rate(rate)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
