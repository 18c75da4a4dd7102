"""Admin for marketers: segments with a visual rule builder and live preview, refresh now, members, consent-filtered
CSV export, explain for a profile, size over time; refresh jobs."""
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from privacy.people import EXPORT_MEMBERS, VIEW_PII, PersonalDataReading, person_viewer
from profiles.models import Consent, CustomerProfile
from tags.admin import TagDefinitionAdmin
from tags.models import TagDefinition
from tags.services import TagError, parse_profile_list

from .exports import segment_members_export_lines
from .models import RefreshJob, Segment
from .rules import (ACTIVITY_AGGREGATES, ACTIVITY_COMPARE_OPS, RuleContext, RuleError, activity_catalogue, catalogue,
                    rule_personal_fields, rule_validate)
from .selectors import rule_diff, rule_preview, segment_explain, segment_history, segment_members, segment_sizes
from .services import cron_schedule, segment_rule_check, segment_save, segment_static_set_members
from .size_chart import size_chart_svg
from .tasks import segment_refresh_enqueue


class RuleBuilderWidget(forms.Textarea):
    """The rule as JSON in a textarea, edited through a tree of groups and conditions (rule_builder.js): every node type
    of the rule language, with the fields of the catalogues; a node it cannot show stays as written, read-only."""

    template_name = "admin/segments/rule_builder_widget.html"

    def __init__(self, *, preview_url: str = "", segment_id: int | None = None, tag_rule: bool = False):
        super().__init__(attrs={"class": "rule-json", "rows": 6})
        self.preview_url, self.segment_id, self.tag_rule = preview_url, segment_id, tag_rule

    class Media:
        js = ("segments/rule_builder.js",)
        css = {"all": ("segments/rule_builder.css",)}

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["builder"] = {
            "catalogue": json.dumps({
                "fields": catalogue(),
                "activity": activity_catalogue(),
                "aggregates": list(ACTIVITY_AGGREGATES),
                "activity_ops": list(ACTIVITY_COMPARE_OPS),
                "tag_rule": self.tag_rule,
                "tags": list(TagDefinition.objects.exclude(kind=TagDefinition.Kind.RULE if self.tag_rule else "")
                             .values_list("code", flat=True)),
                "segments": [] if self.tag_rule else list(Segment.objects.values_list("slug", flat=True)),
            }),
            "preview_url": self.preview_url,
            "segment_id": self.segment_id or "",
        }
        return context


def rule_error_message(error: RuleError) -> str:
    return f"{error.path}: {error.message}"


def personal_search_refusal(rule, *, user) -> str | None:
    """Why this person may not search by the personal fields this rule tests (a rule answers for guessed values, so
    it would recover what the masks hide: README, "Personal fields, masks and who sees them clear"), or None."""
    fields = rule_personal_fields(rule)
    if fields and not user.has_perm(VIEW_PII):
        return (f"a rule on the personal fields {', '.join(fields)} needs the permission to see personal data "
                f"clear ({VIEW_PII})")
    return None


class PersonalSearchCheckMixin:
    """A rule form that refuses rules on personal fields to a person without privacy.view_pii (the admin's get_form
    sets `user`)."""

    user = None

    def _check_personal_search(self, rule) -> None:
        refusal = self.user is not None and personal_search_refusal(rule, user=self.user)
        if refusal:
            self.add_error("rule", refusal)


class SegmentForm(PersonalSearchCheckMixin, forms.ModelForm):
    class Meta:
        model = Segment
        fields = ("name", "slug", "description", "kind", "rule", "status", "refresh_every_minutes", "refresh_cron",
                  "owner", "holdout_percent")

    def clean_refresh_cron(self):
        value = self.cleaned_data["refresh_cron"].strip()
        if value:
            try:
                cron_schedule(value)
            except ValueError as exc:
                raise ValidationError(str(exc))
        return value

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") == Segment.Kind.RULE and "rule" in cleaned:
            if not cleaned["rule"]:
                self.add_error("rule", "a rule segment needs a rule")
            else:
                try:
                    segment_rule_check(rule=cleaned["rule"], slug=cleaned.get("slug"))
                except RuleError as error:
                    self.add_error("rule", rule_error_message(error))
                else:
                    self._check_personal_search(cleaned["rule"])
        return cleaned


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ("name", "slug", "kind", "status", "member_count", "holdout_count", "last_refreshed_at",
                    "is_calculating", "error_flag", "members_link")
    list_filter = ("status", "kind", "is_time_relative")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("inputs", "is_time_relative", "current_version", "member_count", "holdout_count",
                       "last_refreshed_at", "last_error", "error_count", "members_link")
    actions = ("refresh_now",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["rule"].widget = RuleBuilderWidget(preview_url=reverse("admin:segments_segment_preview"),
                                                            segment_id=obj.pk if obj else None)
        form.user = request.user
        return form

    def save_model(self, request, obj, form, change):
        if obj.owner_id is None:
            obj.owner = request.user
        segment_save(segment=obj)
        if obj.kind == Segment.Kind.RULE:
            segment_refresh_enqueue(segment=obj, trigger="saved")

    @admin.display(description="error", boolean=True)
    def error_flag(self, obj):
        return not obj.last_error

    @admin.display(description="members")
    def members_link(self, obj):
        if not obj.pk:
            return "—"
        return format_html('<a href="{}">members, export, history, explain</a>',
                           reverse("admin:segments_segment_members", args=[obj.pk]))

    @admin.action(description="Refresh now")
    def refresh_now(self, request, queryset):
        for segment in queryset:
            segment_refresh_enqueue(segment=segment, trigger=f"admin:{request.user.get_username()}")
        self.message_user(request, f"{queryset.count()} refresh(es) queued; see Refresh jobs", messages.SUCCESS)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("preview/", view(self.preview_view), name="segments_segment_preview"),
            path("<int:pk>/members/", view(self.members_view), name="segments_segment_members"),
            path("<int:pk>/export/", view(self.export_view), name="segments_segment_export"),
            path("<int:pk>/explain/", view(self.explain_view), name="segments_segment_explain"),
            path("<int:pk>/upload/", view(self.upload_view), name="segments_segment_upload"),
        ] + super().get_urls()

    def preview_view(self, request):
        """POST {"rule": ..., "segment": id or null}: count, sample and, for a saved segment, the diff."""
        if request.method != "POST" or not self.has_view_permission(request):
            return HttpResponseBadRequest("POST a rule")
        try:
            body = json.loads(request.body)
            refusal = personal_search_refusal(body.get("rule"), user=request.user)
            if refusal:
                return JsonResponse({"error": refusal, "path": "rule"}, status=403)
            segment = Segment.objects.filter(pk=body.get("segment") or None).first()
            preview = rule_preview(rule=body.get("rule"), slug=segment.slug if segment else body.get("slug") or None)
            if segment is not None:
                preview["diff"] = rule_diff(segment=segment, rule=body["rule"])
        except RuleError as error:
            return JsonResponse({"error": error.message, "path": error.path}, status=400)
        except (ValueError, AttributeError, RecursionError):  # RecursionError: JSON nested thousands deep
            return JsonResponse({"error": "the body must be JSON with a rule"}, status=400)
        reading = PersonalDataReading(person_viewer(request))
        preview["sample"] = [{"public_id": p["public_id"], "city": p["city"] or "",
                              "name": reading.show(p["full_name"], field_name="full_name", public_id=p["public_id"])
                              or "—"} for p in preview["sample"]]
        reading.audit()
        return JsonResponse(preview)

    def _viewable_segment(self, request, pk) -> Segment:
        segment = get_object_or_404(Segment, pk=pk)
        if not self.has_view_permission(request, segment):
            raise PermissionDenied
        return segment

    def members_view(self, request, pk):
        segment = self._viewable_segment(request, pk)
        members = segment_members(segment=segment).order_by("pk")
        page = Paginator(members, 50).get_page(request.GET.get("page"))
        sizes = segment_sizes(segment=segment)
        reading = PersonalDataReading(person_viewer(request))
        rows = [{"public_id": p.public_id, "city": p.city or "", "in_holdout": p.in_holdout,
                 **{name: reading.show(getattr(p, name), field_name=name, public_id=p.public_id) or "—"
                    for name in ("full_name", "phone")}} for p in page.object_list]
        reading.audit()
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "segment": segment, "page": page,
            "rows": rows, "may_export": request.user.has_perm(EXPORT_MEMBERS),
            "channels": Consent.Channel.choices, "chart": size_chart_svg(sizes), "sizes": sizes[:-11:-1],
            "events": segment_history(segment=segment).select_related("profile").order_by("-at", "-id")[:20],
            "title": f"Segment {segment.name}",
        }
        return TemplateResponse(request, "admin/segments/members.html", context)

    def export_view(self, request, pk):
        """CSV of the members a campaign on the chosen channel may contact (consent granted, not in the holdout):
        needs privacy.export_members; clear with privacy.view_pii (audited chunk by chunk before it is sent),
        else masked."""
        segment = self._viewable_segment(request, pk)
        if not request.user.has_perm(EXPORT_MEMBERS):
            raise PermissionDenied
        channel = request.GET.get("channel", "")
        if channel not in Consent.Channel.values:
            return HttpResponseBadRequest(f"choose a channel: {', '.join(Consent.Channel.values)}")
        lines = segment_members_export_lines(segment=segment, channel=channel, viewer=person_viewer(request),
                                             header=("profile_id", "full_name", "phone", "email"))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{segment.slug}-{channel}.csv"'
        return response

    def upload_view(self, request, pk):
        """A static segment's list: CSV with profile_id, or source and customer_key; replaces the members."""
        segment = get_object_or_404(Segment, pk=pk, kind=Segment.Kind.STATIC)
        upload = request.FILES.get("file")
        if request.method != "POST" or upload is None or not self.has_change_permission(request, segment):
            return HttpResponseBadRequest("POST a CSV file")
        try:
            keys, public_ids = parse_profile_list(upload.read().decode("utf-8-sig"))
        except (TagError, UnicodeDecodeError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            result = segment_static_set_members(segment=segment, customer_keys=keys, public_ids=public_ids)
            unknown = f"; {len(result.unknown)} not found, e.g. {', '.join(result.unknown[:5])}" if result.unknown \
                else ""
            self.message_user(request, f"{result.members} profiles on the list{unknown}", messages.SUCCESS)
        return redirect("admin:segments_segment_members", pk=segment.pk)

    def explain_view(self, request, pk):
        """Every node of the rule for one profile; the values seen of personal fields as the reader may see them."""
        segment = self._viewable_segment(request, pk)
        profile = CustomerProfile.objects.filter(public_id=request.GET.get("profile", "").strip()).first()
        if profile is None:
            return JsonResponse({"error": "no profile with that id"}, status=404)
        explained = segment_explain(segment=segment, profile=profile, viewer=person_viewer(request))
        return JsonResponse(explained, json_dumps_params={"ensure_ascii": False})


@admin.register(RefreshJob)
class RefreshJobAdmin(admin.ModelAdmin):
    list_display = ("id", "segment", "tag", "trigger", "status", "entered", "exited", "member_count",
                    "duration_seconds", "queued_at", "short_error")
    list_filter = ("status", "trigger")
    search_fields = ("segment__slug", "tag__code")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error[:80]


class RuleTagForm(PersonalSearchCheckMixin, forms.ModelForm):
    class Meta:
        model = TagDefinition
        fields = ("code", "name", "category", "description", "kind", "rule")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") == TagDefinition.Kind.RULE:
            try:
                rule_validate(cleaned.get("rule"), RuleContext(allow_segments=False))
            except RuleError as error:
                self.add_error("rule", rule_error_message(error))
            else:
                self._check_personal_search(cleaned.get("rule"))
        return cleaned


class RuleTagDefinitionAdmin(TagDefinitionAdmin):
    """The tag admin, with the rule builder and rule validation for rule tags."""

    form = RuleTagForm

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["rule"].widget = RuleBuilderWidget(preview_url=reverse("admin:segments_segment_preview"),
                                                            tag_rule=True)
        form.user = request.user
        return form


admin.site.unregister(TagDefinition)
admin.site.register(TagDefinition, RuleTagDefinitionAdmin)
