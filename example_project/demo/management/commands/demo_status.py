"""Print how far the worker is: claims, renditions made, files on disk (``--json`` for scripts and the tests)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.db.models import Exists, OuterRef
from wagtail.images.models import Rendition

from auto_renditions import status
from auto_renditions.models import ClaimedRendition, PendingDeletion, QueuedImage


def snapshot() -> dict:
    has_rendition = Rendition.objects.filter(image_id=OuterRef("image_id"), filter_spec=OuterRef("filter_spec"))
    keys = set(ClaimedRendition.objects.values_list("image_id", "filter_spec"))
    missing = set(ClaimedRendition.objects.filter(~Exists(has_rendition)).values_list("image_id", "filter_spec"))
    renditions = list(Rendition.objects.all())
    return {
        "posts_with_claims": ClaimedRendition.objects.values("post_id").distinct().count(),
        "claimed_keys": len(keys),
        "claims": ClaimedRendition.objects.count(),
        "claimed_keys_without_rendition": len(missing),
        "renditions": len(renditions),
        "rendition_files_missing": sum(not r.file.storage.exists(r.file.name) for r in renditions),
        "queued_images": QueuedImage.objects.count(),
        "pending_deletions": PendingDeletion.objects.count(),
        "failures": status.failures().count(),
    }


class Command(BaseCommand):
    help = "Show the rendition state of the demo site."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        data = snapshot()
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        for progress in status.post_progress():
            state = "ready" if progress.ready else f"{progress.pending} pending"
            self.stdout.write(f"{progress.title}: {progress.required} renditions claimed, {state}")
        for key, value in data.items():
            self.stdout.write(f"{key.replace('_', ' ')}: {value}")
