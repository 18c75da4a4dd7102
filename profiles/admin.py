"""Admin for data engineers: sources, rules, batches and rejects, profiles (masked), review and unmerge."""
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .models import (
    CustomerProfile, DoNotLink, FeedBatch, MatchRule, MetricsConfig, PossibleDuplicate, ProbabilisticModel,
    ProfileMetrics, RejectedRow, Source, SourceRecord, SuppressedIdentifier,
)
from privacy.people import read_personal_data, shown
from privacy.policy import mask_email, mask_phone

from .selectors import probabilistic_model_comparisons, profile_lineage, profile_timeline
from .services import possible_duplicate_accept, possible_duplicate_reject, profile_unmerge


def personal(obj, name: str, *, public_id: str | None) -> str:
    """A personal value of a profile or record as the page's reader may see it (privacy.people.shown)."""
    value = getattr(obj, name)
    if value in (None, ""):
        return "—"
    return str(shown(value, field_name=name, public_id=public_id))


def _profile_public_id(obj) -> str | None:
    if isinstance(obj, CustomerProfile):
        return obj.public_id
    return obj.profile.public_id if obj.profile_id else None


def _personal_column(name: str):
    @admin.display(description=name.replace("_", " "))
    def column(self, obj):
        return personal(obj, name, public_id=_profile_public_id(obj))

    column.__name__ = f"personal_{name}"
    return column


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PersonalDataAdmin(ReadOnlyAdmin):
    """Pages that show personal values: each passes through the privacy policy (masked without privacy.view_pii,
    else clear) and its clear reads are audited, per profile, before the page leaves. The personal_* columns are a
    profile's or a record's personal fields, shown so."""

    personal_full_name = _personal_column("full_name")
    personal_family_name = _personal_column("family_name")
    personal_given_name = _personal_column("given_name")
    personal_birth_date = _personal_column("birth_date")
    personal_phone = _personal_column("phone")
    personal_email = _personal_column("email")
    personal_address = _personal_column("address")

    def changelist_view(self, request, extra_context=None):
        return read_personal_data(request, lambda: super(PersonalDataAdmin, self).changelist_view(
            request, extra_context))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return read_personal_data(request, lambda: super(PersonalDataAdmin, self).change_view(
            request, object_id, form_url, extra_context))


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "priority", "is_cif_authority", "is_active", "column_mapping")
    list_editable = ("priority", "is_active")


@admin.register(MatchRule)
class MatchRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "priority", "fields", "is_active")
    list_editable = ("priority", "is_active")


class RejectedRowInline(admin.TabularInline):
    model = RejectedRow
    fields = ("row_number", "reason", "raw")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False


@admin.register(FeedBatch)
class FeedBatchAdmin(ReadOnlyAdmin):
    list_display = ("id", "source", "kind", "status", "rows_read", "rows_created", "rows_updated", "rows_unchanged",
                    "rows_rejected", "started_at", "finished_at", "model_use", "scored_by")
    list_filter = ("status", "source", "kind")
    readonly_fields = [f.name for f in FeedBatch._meta.fields]
    inlines = [RejectedRowInline]


@admin.register(RejectedRow)
class RejectedRowAdmin(ReadOnlyAdmin):
    list_display = ("batch", "row_number", "reason")
    list_filter = ("batch__source",)
    search_fields = ("reason",)
    list_select_related = ("batch__source",)


class SourceRecordInline(admin.TabularInline):
    model = SourceRecord
    fields = ("source", "customer_key", "personal_full_name", "personal_birth_date", "personal_phone",
              "id_number_masked", "last_batch")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False

    personal_full_name = _personal_column("full_name")
    personal_birth_date = _personal_column("birth_date")
    personal_phone = _personal_column("phone")


class ProfileMetricsInline(admin.StackedInline):
    """The financial picture and derived attributes, as the last recomputation left them."""

    model = ProfileMetrics
    fields = [f.name for f in ProfileMetrics._meta.fields if f.name not in ("id", "profile")]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(MetricsConfig)
class MetricsConfigAdmin(admin.ModelAdmin):
    """The thresholds, margins and weights of the derived attributes (one row; see the README for the rules)."""

    def has_add_permission(self, request):
        return not MetricsConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CustomerProfile)
class CustomerProfileAdmin(PersonalDataAdmin):
    list_display = ("public_id", "personal_full_name", "gender", "personal_birth_date", "personal_phone", "city",
                    "record_count", "status", "updated_at")
    list_filter = ("status", "gender")
    search_fields = ("=public_id",)
    show_full_result_count = False
    fields = ("public_id", "status", "merged_into", "personal_full_name", "personal_family_name",
              "personal_given_name", "gender", "personal_birth_date", "id_type", "id_number_masked", "personal_phone",
              "personal_email", "personal_address", "city", "postcode", "record_count", "lineage_table",
              "timeline_table", "created_at", "updated_at")
    readonly_fields = fields
    inlines = [SourceRecordInline, ProfileMetricsInline]
    actions = ["unmerge"]

    @admin.display(description="lineage")
    def lineage_table(self, obj):
        rows = profile_lineage(profile=obj)
        return format_html(
            "<table><tr><th>attribute</th><th>source record</th><th>batch</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}:{}</td><td>#{}</td></tr>", (
                (r.attribute, r.record.source.code, r.record.customer_key, r.batch_id) for r in rows
            )),
        )

    @admin.display(description="timeline (latest 50 events)")
    def timeline_table(self, obj):
        return format_html(
            "<table><tr><th>when</th><th>event</th><th>source</th><th>reference</th><th>amount</th><th></th></tr>"
            "{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>", (
                (timezone.localtime(e["at"]).strftime("%Y-%m-%d %H:%M") if e["at"] else "", e["event"],
                 e["source"] or "", e["reference"], e["amount"] if e["amount"] is not None else "",
                 e["currency"] or "", e["detail"] or "")
                for e in profile_timeline(profile=obj, limit=50)
            )),
        )

    @admin.action(description="Unmerge: split into the profiles the deterministic rules support")
    def unmerge(self, request, queryset):
        for profile in queryset:
            report = profile_unmerge(profile=profile, decided_by=request.user.get_username())
            messages.info(request, f"{profile.public_id}: {report.profiles_created} profile(s) split off")


# Never shown as stored: the personal ones through the privacy policy, the name key and card token not at all.
CLEAR_PERSONAL_FIELDS = ("full_name", "family_name", "given_name", "name_key", "birth_date", "phone", "email",
                         "address", "pan_token")


@admin.register(SourceRecord)
class SourceRecordAdmin(PersonalDataAdmin):
    list_display = ("source", "customer_key", "profile", "personal_full_name", "personal_birth_date",
                    "personal_phone", "id_number_masked", "id_valid", "pan_display", "needs_resolution")
    list_filter = ("source", "id_valid", "needs_resolution")
    search_fields = ("=customer_key", "=profile__public_id")
    list_select_related = ("source", "profile")
    show_full_result_count = False
    exclude = CLEAR_PERSONAL_FIELDS
    readonly_fields = [f.name for f in SourceRecord._meta.fields if f.name not in CLEAR_PERSONAL_FIELDS] + [
        "personal_full_name", "personal_family_name", "personal_given_name", "personal_birth_date",
        "personal_phone", "personal_email", "personal_address"]

    @admin.display(description="card")
    def pan_display(self, obj):
        return f"{obj.pan_bin}******{obj.pan_last4}" if obj.pan_last4 else "—"


@admin.register(PossibleDuplicate)
class PossibleDuplicateAdmin(PersonalDataAdmin):
    list_display = ("id", "record_a", "record_b", "probability", "status", "created_at", "decided_by")
    list_filter = ("status",)
    list_select_related = ("record_a__source", "record_b__source")
    readonly_fields = ("record_a", "record_b", "side_by_side", "probability", "evidence", "status", "decided_at",
                       "decided_by")
    actions = ["accept", "reject"]
    # What a reviewer compares; the personal ones as the privacy policy lets the reviewer see them.
    COMPARED = ("full_name", "gender", "birth_date", "id_number_masked", "phone", "email", "address", "city",
                "postcode")

    @admin.display(description="the two records")
    def side_by_side(self, obj):
        records = (obj.record_a, obj.record_b)
        return format_html(
            "<table><tr><th></th><th>{}</th><th>{}</th></tr>{}</table>", *records,
            format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", (
                (name.replace("_", " "), *(personal(r, name, public_id=_profile_public_id(r)) for r in records))
                for name in self.COMPARED
            )),
        )

    @admin.action(description="Accept: same customer, merge")
    def accept(self, request, queryset):
        for duplicate in queryset.filter(status=PossibleDuplicate.Status.OPEN):
            possible_duplicate_accept(duplicate=duplicate, decided_by=request.user.get_username())
        messages.info(request, "Accepted; the profiles were merged.")

    @admin.action(description="Reject: different customers, never link")
    def reject(self, request, queryset):
        for duplicate in queryset.filter(status=PossibleDuplicate.Status.OPEN):
            possible_duplicate_reject(duplicate=duplicate, decided_by=request.user.get_username())
        messages.info(request, "Rejected; the pair is now a do-not-link pair.")


@admin.register(DoNotLink)
class DoNotLinkAdmin(admin.ModelAdmin):
    list_display = ("record_a", "record_b", "reason", "created_by", "created_at")
    raw_id_fields = ("record_a", "record_b")


@admin.register(SuppressedIdentifier)
class SuppressedIdentifierAdmin(ReadOnlyAdmin):
    list_display = ("field", "masked_value", "source", "record_count", "detected_at")
    list_filter = ("field", "source")
    exclude = ("value",)
    readonly_fields = ("field", "masked_value", "source", "record_count", "detected_at")

    @admin.display(description="value")
    def masked_value(self, obj):
        if obj.field == "phone":
            return mask_phone(obj.value)
        if obj.field == "email":
            return mask_email(obj.value)
        return obj.value[:4] + "…"
    list_select_related = ("source",)


# The chart's bars: pixels per bit of match weight, and the weight at which a bar stops growing (drawn open-ended).
_BAR_PX_PER_BIT = 12
_BAR_MAX_BITS = 20


def _weight_bar(weight: float | None) -> str:
    """An SVG bar of a match weight around a zero line: right and green for evidence of a match, left and red
    against."""
    half = _BAR_PX_PER_BIT * _BAR_MAX_BITS
    if weight is None:
        return format_html('<svg width="{}" height="14" role="img" aria-label="no weight"></svg>', 2 * half)
    length = min(abs(weight), _BAR_MAX_BITS) * _BAR_PX_PER_BIT
    x = half if weight >= 0 else half - length
    colour = "#2e7d32" if weight >= 0 else "#c62828"
    return format_html(
        '<svg width="{}" height="14" role="img" aria-label="match weight {}">'
        '<rect x="{}" y="2" width="{}" height="10" fill="{}"/>'
        '<line x1="{}" y1="0" x2="{}" y2="14" stroke="#555"/></svg>',
        2 * half, f"{weight:+.2f}", f"{x:.1f}", f"{length:.1f}", colour, half, half,
    )


@admin.register(ProbabilisticModel)
class ProbabilisticModelAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "reason", "trained_on_records", "training_sources", "warning_count", "created_at")
    list_filter = ("kind", "reason")
    fields = ("kind", "reason", "created_at", "trained_on_records", "training_sources", "training_digest",
              "training_seconds", "prior_match_probability", "parameters_chart", "training_warnings")
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="records per source (last batch)")
    def training_sources(self, obj):
        sources = obj.training_data.get("sources", {})
        return ", ".join(f"{code}: {s['records']} (batch {s['last_batch']})" for code, s in sources.items()) or "—"

    @admin.display(description="digest of the compared values")
    def training_digest(self, obj):
        return obj.training_data.get("digest", "—")

    @admin.display(description="warnings")
    def warning_count(self, obj):
        return len(obj.warnings)

    @admin.display(description="probability two random records match (lambda)")
    def prior_match_probability(self, obj):
        lam = obj.parameters.get("splink_settings", {}).get("probability_two_random_records_match")
        return "—" if lam is None else f"{lam:.4g}"

    @admin.display(description="training warnings")
    def training_warnings(self, obj):
        if not obj.warnings:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((w,) for w in obj.warnings)))

    @admin.display(description="m, u and match weight log2(m/u) per comparison level")
    def parameters_chart(self, obj):
        rows = []
        for comparison in probabilistic_model_comparisons(model=obj):
            rows.append(format_html('<tr><th colspan="6" title="{}">{}</th></tr>',
                                    comparison.description, comparison.name))
            for level in comparison.levels:
                weight = level.match_weight
                rows.append(format_html(
                    '<tr class="model-level" data-comparison="{}"><td>{}{}</td><td class="m">{}</td>'
                    '<td class="u">{}</td><td class="weight">{}</td><td>{}</td><td class="notes">{}</td></tr>',
                    comparison.name, level.label, " (term-frequency adjusted)" if level.term_frequency_adjusted else "",
                    "—" if level.m is None else f"{level.m:.4g}", "—" if level.u is None else f"{level.u:.4g}",
                    "—" if weight is None else f"{weight:+.2f}", _weight_bar(weight), "; ".join(level.notes),
                ))
        return format_html(
            '<table class="model-chart"><thead><tr><th>level</th><th>m</th><th>u</th><th>weight</th>'
            '<th>-{} … 0 … +{} bits</th><th>not estimated from the records</th></tr></thead><tbody>{}</tbody></table>',
            _BAR_MAX_BITS, _BAR_MAX_BITS, format_html_join("", "{}", ((row,) for row in rows)),
        )
