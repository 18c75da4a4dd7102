from django import forms
from django.contrib import admin, messages

from .keys import api_key_create, api_key_forget, api_keys_revoke, scopes_validate
from .models import ApiKey, Scope


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(min_value=1, required=False, help_text="Empty: never expires")

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scope_list", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scopes", "rate", "expires_in_days"]
        return ["name", "prefix", "scopes", "rate", "created_at", "created_by", "expires_at", "revoked_at",
                "last_used_at"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def save_model(self, request, obj, form, change):
        if change:
            obj.scopes = scopes_validate(form.cleaned_data["scopes"])
            obj.save()
            api_key_forget(prefixes=[obj.prefix])
            return
        created, key = api_key_create(name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                                      expires_in_days=form.cleaned_data.get("expires_in_days"),
                                      rate=form.cleaned_data.get("rate") or "", created_by=request.user.get_username())
        obj.pk = created.pk
        messages.warning(request, f"The new key is {key} — copy it now, it is not stored and cannot be shown again.")

    # A deleted key must stop answering at once, like a revoked one, not when its cache entry expires.
    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        api_key_forget(prefixes=[obj.prefix])

    def delete_queryset(self, request, queryset):
        prefixes = list(queryset.values_list("prefix", flat=True))
        super().delete_queryset(request, queryset)
        api_key_forget(prefixes=prefixes)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        revoked = api_keys_revoke(ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Revoked {revoked} key(s).")
