"""Admin of the audit trail: read-only, searchable by profile and request."""
from django.contrib import admin

from .models import AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
