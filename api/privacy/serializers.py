from rest_framework import serializers

from privacy.models import ErasureLog


class ErasureRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="The request or ticket reference; no personal data")


class ErasureLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ErasureLog
        fields = ["id", "erased_at", "erased_by", "reason", "counts"]
