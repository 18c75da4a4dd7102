"""A few sample tags and segments for the main job (bin/demo), showing each node type of the rule language."""
from tags.models import TagDefinition

from .models import Segment
from .services import RefreshSummary, segment_save, segments_refresh_all

SAMPLE_TAGS = (
    {"code": "multi-system", "name": "Known to several systems", "category": "relationship", "kind": "rule",
     "rule": {"field": "record_count", "op": "gte", "value": 2}},
    {"code": "vip", "name": "VIP service", "category": "service", "kind": "manual"},
)

SAMPLE_SEGMENTS = (
    {"slug": "shanghai-women", "name": "Women in Shanghai",
     "rule": {"all": [{"field": "gender", "op": "eq", "value": "F"},
                      {"field": "city", "op": "startswith", "value": "上海"}]}},
    {"slug": "seniors", "name": "Aged 60 or more", "refresh_every_minutes": 1440,
     "rule": {"field": "birth_date", "op": "lte", "value": {"years_ago": 60}}},
    {"slug": "seniors-several-systems", "name": "Seniors known to several systems, reachable", "holdout_percent": 10,
     "rule": {"all": [{"segment": "seniors"}, {"tag": "multi-system"},
                      {"not": {"field": "phone", "op": "is_null"}}]}},
    {"slug": "new-customers", "name": "New: first product in the last 90 days",
     "rule": {"field": "lifecycle_stage", "op": "eq", "value": "new"}},
    {"slug": "travel-spenders", "name": "Card spend on travel of ¥5,000 or more in 90 days",
     "rule": {"activity": {"kind": "card_transactions",
                           "where": [{"field": "merchant_category", "op": "eq", "value": "travel"}],
                           "within_days": 90, "agg": "sum", "field": "amount", "op": "gte", "value": 5000}}},
)


def sample_segments_create() -> RefreshSummary:
    """Create (or update) the sample tags and segments and refresh them all."""
    for fields in SAMPLE_TAGS:
        TagDefinition.objects.update_or_create(code=fields["code"], defaults=fields)
    for fields in SAMPLE_SEGMENTS:
        segment = Segment.objects.filter(slug=fields["slug"]).first() or Segment()
        for name, value in fields.items():
            setattr(segment, name, value)
        segment_save(segment=segment)
    return segments_refresh_all(trigger="main_job")
