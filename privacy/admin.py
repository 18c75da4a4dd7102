"""Admin of the audit trail (read-only, searchable by profile and request), the erasure log, and the customer's
rights as actions on the profile admin."""
import json
import uuid

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse
from django.template.response import TemplateResponse

from profiles.admin import CustomerProfileAdmin
from profiles.models import CustomerProfile

from .models import AuditRecord, ErasureLog
from .policy import Viewer
from .rights import SubjectEncoder, erase_subject, subject_access


class TrailAdmin(admin.ModelAdmin):
    """A trail that is read, never written or deleted by hand (audit records, erasures)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditRecord)
class AuditRecordAdmin(TrailAdmin):
    list_display = ["at", "profile_public_id", "caller", "field_list", "method", "path", "request_id"]
    # Search by profile id: a list filter over a million profiles would not load.
    search_fields = ["=profile_public_id", "=request_id"]
    list_filter = ["api_key"]
    date_hierarchy = "at"
    list_select_related = ["api_key", "user"]

    @admin.display(description="caller")
    def caller(self, obj):
        return str(obj.api_key) if obj.api_key_id else obj.user and obj.user.get_username()

    @admin.display(description="fields")
    def field_list(self, obj):
        return ", ".join(obj.fields)


# --- The customer's rights on the profile admin: subject access and erasure, each behind its own permission --------

class SubjectRightsProfileAdmin(CustomerProfileAdmin):
    """The profile admin with two more actions: download everything held on a customer (privacy.subject_access)
    and erase a customer (privacy.erase_subject, with a reason asked on a confirmation page)."""

    actions = [*CustomerProfileAdmin.actions, "download_subject_access", "erase"]

    def has_subject_access_permission(self, request) -> bool:
        return request.user.has_perm("privacy.subject_access")

    def has_erase_subject_permission(self, request) -> bool:
        return request.user.has_perm("privacy.erase_subject")

    @admin.action(description="Subject access: download everything held on the customer (JSON, audited)",
                  permissions=["subject_access"])
    def download_subject_access(self, request, queryset):
        profiles = list(queryset[:2])
        if len(profiles) != 1:
            self.message_user(request, "Choose one profile for a subject access.", messages.ERROR)
            return None
        viewer = Viewer(sees_clear=True, user_id=request.user.pk, request_id=uuid.uuid4().hex,
                        method=request.method, path=request.path[:500])
        data = subject_access(profile=profiles[0], viewer=viewer)
        response = HttpResponse(json.dumps(data, cls=SubjectEncoder, ensure_ascii=False, indent=2),
                                content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="subject-access-{profiles[0].public_id}.json"'
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Erase: delete the customer everywhere (PIPL); feeds will not bring them back",
                  permissions=["erase_subject"])
    def erase(self, request, queryset):
        form = ErasureForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for profile in queryset:
                log = erase_subject(profile=profile, reason=form.cleaned_data["reason"],
                                    by=f"admin:{request.user.get_username()}")
                self.message_user(request, f"Erasure #{log.pk}: {log.counts.get('source_records', 0)} source "
                                           f"record(s) and everything attached deleted.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/privacy/erase_subject.html", {
            **self.admin_site.each_context(request), "title": "Erase customers", "form": form,
            "profiles": queryset, "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })


class ErasureForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="The request or ticket reference; no personal data")


admin.site.unregister(CustomerProfile)
admin.site.register(CustomerProfile, SubjectRightsProfileAdmin)


@admin.register(ErasureLog)
class ErasureLogAdmin(TrailAdmin):
    list_display = ["erased_at", "erased_by", "reason", "counts"]
    date_hierarchy = "erased_at"
