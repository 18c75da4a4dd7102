from django.core.management.base import BaseCommand, CommandError

from segments.models import Segment
from segments.services import segment_refresh, segments_refresh_all, segments_refresh_due, \
    segments_in_dependency_order


class Command(BaseCommand):
    help = "Refresh segments: the given slugs (in dependency order), those due (--due), or all with rule tags (--all)."

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*")
        parser.add_argument("--due", action="store_true", help="segments whose schedule is due")
        parser.add_argument("--all", action="store_true", help="every active segment and rule tag")

    def handle(self, *args, slugs, due, all, **options):
        if bool(slugs) + due + all != 1:
            raise CommandError("give segment slugs, --due or --all")
        if slugs:
            segments = list(Segment.objects.filter(slug__in=slugs))
            missing = sorted(set(slugs) - {s.slug for s in segments})
            if missing:
                raise CommandError(f"unknown segments: {', '.join(missing)}")
            jobs = [segment_refresh(segment=s, trigger="command") for s in segments_in_dependency_order(segments)]
        else:
            jobs = (segments_refresh_due(trigger="command") if due else segments_refresh_all(trigger="command")).jobs
        for job in jobs:
            target = job.segment.slug if job.segment_id else f"tag {job.tag.code}"
            self.stdout.write(f"{target}: {job.status}, {job.member_count} members, +{job.entered} -{job.exited} "
                              f"in {job.duration_seconds}s")
