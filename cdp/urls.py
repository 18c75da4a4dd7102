from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
]

# Django's own 400, 403 and 500 (raised outside a view, e.g. by middleware) as the API's JSON errors under /api/.
handler400 = "api.exceptions.bad_request_view"
handler403 = "api.exceptions.permission_denied_view"
handler500 = "api.exceptions.server_error"
