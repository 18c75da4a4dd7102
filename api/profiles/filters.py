import datetime as dt

import django_filters
from django import forms
from django.utils import timezone

from profiles.models import CustomerProfile
from segments.selectors import segment_member_profile_ids
from tags.selectors import tagged_profile_ids


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year - years, day=28)


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO date-time in UTC: PostgreSQL refuses an offset past 15:59 (Python accepts up to 23:59), so "-17:04"
    would reach the database as written and fail there."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(dt.timezone.utc)
        except OverflowError:
            raise forms.ValidationError("Enter a date-time between the years 1 and 9999 in UTC.") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _UtcIsoDateTimeField


class CustomerProfileFilterSet(django_filters.FilterSet):
    city = django_filters.CharFilter()
    gender = django_filters.ChoiceFilter(choices=[("M", "male"), ("F", "female"), ("U", "unknown")])
    age_min = django_filters.NumberFilter(method="filter_age_min", min_value=0, max_value=150,
                                          label="Aged at least (years, from the birth date)")
    age_max = django_filters.NumberFilter(method="filter_age_max", min_value=0, max_value=150,
                                          label="Aged at most (years, from the birth date)")
    lifecycle_stage = django_filters.CharFilter(field_name="metrics__lifecycle_stage")
    value_tier = django_filters.CharFilter(field_name="metrics__value_tier")
    tag = django_filters.CharFilter(method="filter_tag", label="Holds this tag (code) now")
    segment = django_filters.CharFilter(method="filter_segment", label="Current member of this segment (slug)")
    updated_since = UtcIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = CustomerProfile
        fields = []

    def filter_age_min(self, queryset, name, value):
        # Aged at least N: born on or before today N years ago.
        return queryset.filter(birth_date__lte=_years_before(timezone.localdate(), int(value)))

    def filter_age_max(self, queryset, name, value):
        # Aged at most N: not yet N + 1, so born after today N + 1 years ago.
        return queryset.filter(birth_date__gt=_years_before(timezone.localdate(), int(value) + 1))

    def filter_tag(self, queryset, name, value):
        return queryset.filter(pk__in=tagged_profile_ids(code=value))

    def filter_segment(self, queryset, name, value):
        return queryset.filter(pk__in=segment_member_profile_ids(slug=value))
