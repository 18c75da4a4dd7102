"""Per-key rate limit: a fixed-window counter in the cache (one increment per request).

DRF's SimpleRateThrottle keeps every request's timestamp in a list that it reads and rewrites on each request;
at thousands of requests per second per key that list is the cost, so a counter per window is used instead.
"""
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from .models import ApiKey
from .rates import parse_rate


class ApiKeyRateThrottle(BaseThrottle):
    """Each key (or staff user) gets its own rate: the key's `rate` if set, else settings.CDP_API_RATE."""

    def allow_request(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            ident, rate = f"k{request.auth.pk}", request.auth.rate or settings.CDP_API_RATE
        elif request.user and request.user.is_authenticated:
            ident, rate = f"u{request.user.pk}", settings.CDP_API_RATE
        else:
            return True  # refused by authentication anyway
        limit, period = parse_rate(rate)
        now = time.time()
        window = int(now // period)
        self._retry_after = (window + 1) * period - now
        key = f"cdp:throttle:{ident}:{period}:{window}"
        cache.add(key, 0, timeout=period + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=period + 1)
            count = 1
        return count <= limit

    def wait(self) -> float:
        return max(self._retry_after, 0.001)
