"""/api/: the versioned API under v1/, and its schema and docs (authenticated, like everything here)."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from .exceptions import not_found_view
from .feeds import FeedBatchViewSet, LoadJobViewSet, RefreshJobViewSet
from .privacy.views import SubjectViewSet
from .profiles.views import ProfileViewSet
from .segments.views import SegmentViewSet
from .tags import TagDefinitionViewSet

router = DefaultRouter()
router.include_root_view = False
router.register("profiles", ProfileViewSet, basename="profile")
router.register("segments", SegmentViewSet, basename="segment")
router.register("tags", TagDefinitionViewSet, basename="tag")
router.register("feeds/batches", FeedBatchViewSet, basename="feed-batch")
router.register("jobs/refresh", RefreshJobViewSet, basename="refresh-job")
router.register("jobs/load", LoadJobViewSet, basename="load-job")
router.register("privacy/subjects", SubjectViewSet, basename="privacy-subject")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"), name="redoc"),
    re_path(r"", not_found_view),
]
