"""Tag admin: definitions, assignments, bulk upload of a list. The rule builder for rule tags is added by the
segments admin (segments builds on tags, not the reverse)."""
from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from profiles.models import CustomerProfile

from .models import TagAssignment, TagDefinition
from .services import TagError, parse_profile_list, tag_add, tags_bulk_assign


class BulkUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with a profile_id column, or source and customer_key columns")
    expires_at = forms.DateTimeField(required=False, help_text="optional: the tags lapse then")


@admin.register(TagDefinition)
class TagDefinitionAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "category", "kind", "assigned", "last_refreshed_at", "upload_link")
    list_filter = ("kind", "category")
    search_fields = ("code", "name", "description")
    readonly_fields = ("last_refreshed_at", "last_error")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(assigned_count=Count("assignments"))

    @admin.display(description="profiles", ordering="assigned_count")
    def assigned(self, obj):
        return obj.assigned_count

    @admin.display(description="bulk upload")
    def upload_link(self, obj):
        if obj.kind != TagDefinition.Kind.MANUAL:
            return "—"
        return format_html('<a href="{}">upload a list</a>', reverse("admin:tags_tagdefinition_upload", args=[obj.pk]))

    def get_urls(self):
        return [path("<int:pk>/upload/", self.admin_site.admin_view(self.upload_view),
                     name="tags_tagdefinition_upload")] + super().get_urls()

    def upload_view(self, request, pk):
        tag = get_object_or_404(TagDefinition, pk=pk)
        form = BulkUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                keys, public_ids = parse_profile_list(form.cleaned_data["file"].read().decode("utf-8-sig"))
                result = tags_bulk_assign(tag=tag, customer_keys=keys, public_ids=public_ids,
                                          assigned_by=request.user.get_username(),
                                          expires_at=form.cleaned_data["expires_at"])
            except (TagError, UnicodeDecodeError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                unknown = f"; {len(result.unknown)} not found, e.g. {', '.join(result.unknown[:5])}" if result.unknown \
                    else ""
                self.message_user(request, f"tagged {result.assigned} profiles ({result.already_tagged} already "
                                           f"had the tag){unknown}", messages.SUCCESS)
                return redirect("admin:tags_tagdefinition_changelist")
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "tag": tag,
                   "title": f"Upload a list for tag {tag.code}"}
        return TemplateResponse(request, "admin/tags/upload.html", context)


class TagAssignmentForm(forms.ModelForm):
    """A person picks the profile, the manual tag and when it lapses; source, who and when are recorded for them."""

    class Meta:
        model = TagAssignment
        fields = ("profile", "tag", "expires_at")


@admin.register(TagAssignment)
class TagAssignmentAdmin(admin.ModelAdmin):
    form = TagAssignmentForm
    list_display = ("tag", "profile", "source", "assigned_at", "assigned_by", "expires_at")
    list_filter = ("source", "tag")
    search_fields = ("=profile__public_id", "tag__code")
    raw_id_fields = ("profile",)
    list_select_related = ("tag", "profile")

    def get_readonly_fields(self, request, obj=None):
        return ("profile", "tag", "source", "assigned_at", "assigned_by") if obj else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Rule and system tags are the platform's (tags.services refuses them too); an absorbed profile answers
        # for its survivor everywhere else, so it takes no tags of its own.
        if db_field.name == "tag":
            kwargs["queryset"] = TagDefinition.objects.filter(kind=TagDefinition.Kind.MANUAL)
        elif db_field.name == "profile":
            kwargs["queryset"] = CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["expires_at"])
            return
        tag_add(tag=obj.tag, profile=obj.profile, assigned_by=request.user.get_username(),
                expires_at=obj.expires_at)
        obj.pk = TagAssignment.objects.get(tag=obj.tag, profile=obj.profile).pk

    def _is_manual(self, obj) -> bool:
        return obj is None or obj.tag.kind == TagDefinition.Kind.MANUAL

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._is_manual(obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._is_manual(obj)
