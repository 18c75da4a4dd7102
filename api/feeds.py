"""Feed uploads and their batches under /api/v1/feeds/, and refresh jobs under /api/v1/jobs/refresh/.

An upload is streamed to disk (Django keeps an upload larger than FILE_UPLOAD_MAX_MEMORY_SIZE in a temporary file,
which is moved, not copied, into CDP_FEED_UPLOAD_DIR), recorded as a queued batch and loaded by a Celery task; the
batch is the job a caller polls.
"""
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.reverse import reverse

from profiles.activity import KINDS
from profiles.feeds import feed_batch_queue
from profiles.models import FeedBatch, RejectedRow, Source
from profiles.tasks import load_feed_task
from segments.models import RefreshJob

from .models import Scope
from .parsers import MultiPartParser
from .segments.serializers import RefreshJobSerializer

FEED_KINDS = ["customers", *KINDS]
JOBS = Scope.JOBS_READ.value


class FeedUploadSerializer(serializers.Serializer):
    source = serializers.SlugRelatedField(slug_field="code", queryset=Source.objects.all())
    kind = serializers.ChoiceField(choices=FEED_KINDS, default="customers")
    encoding = serializers.ChoiceField(choices=["utf-8", "gb18030"], default="utf-8",
                                       help_text="CSV encoding; UTF-8 with or without BOM by default")
    file = serializers.FileField(help_text="CSV or JSON Lines, optionally gzipped; at most CDP_FEED_MAX_BYTES")

    def validate_file(self, upload):
        # The load would refuse it (and a gzip decompressing past the limit); refused now, nothing is queued.
        if upload.size > settings.CDP_FEED_MAX_BYTES:
            raise serializers.ValidationError(
                f"The file is larger than {settings.CDP_FEED_MAX_BYTES} bytes (CDP_FEED_MAX_BYTES).")
        return upload


class FeedBatchSerializer(serializers.ModelSerializer):
    source = serializers.SlugRelatedField(slug_field="code", read_only=True)
    file_name = serializers.SerializerMethodField(help_text="The file's name (not where it is stored)")

    class Meta:
        model = FeedBatch
        fields = ["id", "source", "kind", "file_name", "file_sha256", "status", "error", "rows_read", "rows_created",
                  "rows_updated", "rows_unchanged", "rows_rejected", "warnings", "started_at", "finished_at",
                  "resolved_at", "model_use", "scored_by"]
        extra_kwargs = {"scored_by": {"help_text": "The probabilistic model that scored the resolution after it"}}

    def get_file_name(self, batch) -> str:
        return Path(batch.file_name).name


class FeedRejectedRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = RejectedRow
        fields = ["row_number", "reason", "raw"]


class FeedUploadAcceptedSerializer(serializers.Serializer):
    job_id = serializers.IntegerField(help_text="The batch id")
    status = serializers.CharField()
    job_url = serializers.URLField()


def _store_upload(upload) -> Path:
    """Move (large: a temporary file on disk) or write (small: in memory) the upload into the upload folder."""
    folder = Path(settings.CDP_FEED_UPLOAD_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex}-{Path(upload.name).name[-100:]}"
    if hasattr(upload, "temporary_file_path"):
        shutil.move(upload.temporary_file_path(), target)
    else:
        with open(target, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
    return target


class _FeedBatchReads(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = FeedBatch.objects.select_related("source").order_by("pk")
    serializer_class = FeedBatchSerializer
    filterset_fields = {"source__code": ["exact"], "status": ["exact"], "kind": ["exact"]}
    lookup_value_regex = "[0-9]+"


@extend_schema_view(
    list=extend_schema(summary="Feed batches (loads) with status and counts, oldest first"),
    retrieve=extend_schema(summary="A feed batch: the status of a load job"),
)
class FeedBatchViewSet(_FeedBatchReads):
    required_scopes = {"list": JOBS, "retrieve": JOBS, "rejects": JOBS, "upload": Scope.FEEDS_WRITE.value}

    @extend_schema(summary="Rejected rows of a batch, with row number and reason",
                   responses={200: FeedRejectedRowSerializer(many=True)})
    @action(detail=True, methods=["get"], filterset_fields=None)
    def rejects(self, request, pk=None):
        page = self.paginate_queryset(self.get_object().rejected_rows.order_by("pk"))
        return self.get_paginated_response(FeedRejectedRowSerializer(page, many=True).data)

    @extend_schema(summary="Upload a feed file: stored, queued and loaded by a worker (202 with the batch id)",
                   request={"multipart/form-data": FeedUploadSerializer},
                   responses={202: FeedUploadAcceptedSerializer, 400: OpenApiResponse(description="Bad upload")})
    @action(detail=False, methods=["post"], url_path="upload", parser_classes=[MultiPartParser],
            filterset_fields=None, pagination_class=None)
    def upload(self, request):
        form = FeedUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        path = _store_upload(data["file"])
        batch = feed_batch_queue(source=data["source"], kind=data["kind"], path=path)
        args = (data["source"].code, str(path), "gb18030" if data["encoding"] == "gb18030" else "utf-8-sig")
        transaction.on_commit(lambda: load_feed_task.delay(*args, kind=data["kind"], batch_id=batch.pk))
        return Response({"job_id": batch.pk, "status": batch.status,
                         "job_url": reverse("feed-batch-detail", kwargs={"pk": batch.pk}, request=request)},
                        status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=extend_schema(summary="Segment and rule-tag refresh jobs, newest first"),
    retrieve=extend_schema(summary="A refresh job: queued, running, succeeded, failed or skipped"),
)
class RefreshJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = RefreshJob.objects.select_related("segment", "tag").order_by("pk")
    serializer_class = RefreshJobSerializer
    filterset_fields = {"segment__slug": ["exact"], "status": ["exact"]}
    lookup_value_regex = "[0-9]+"
    required_scopes = {"list": JOBS, "retrieve": JOBS}


@extend_schema_view(
    list=extend_schema(summary="Feed load jobs (the same batches as /feeds/batches/), oldest first"),
    retrieve=extend_schema(summary="A load job: queued, running, succeeded or failed, with counts"),
)
class LoadJobViewSet(_FeedBatchReads):
    """/jobs/load/{id}/ is the load-job view of a feed batch, next to /jobs/refresh/{id}/."""

    required_scopes = {"list": JOBS, "retrieve": JOBS}
