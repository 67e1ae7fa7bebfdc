"""One side of the publish-versus-replacement race, run as its own process by test_concurrency.py.

Usage: python -m tests.replace_race_driver ROLE PLAN_JSON. ROLE is ``publish`` (a post showing the image is
published the admin's way) or ``replace`` (the image's file is replaced by a smaller one, like Wagtail's edit
form saves it). Round k starts at ``start + k * period``; seeded pauses make the replacement land at different
moments of the publish, which pauses before it takes its image locks (where the planning read used to happen
before, and the posts were looked up before by the replacement).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time


def main(role: str, plan: dict) -> None:
    import django

    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from wagtail.images.models import Image

    from auto_renditions import ledger
    from tests.factories import photo_bytes, publish_post

    pause = {"value": 0.0}
    lock_images = ledger.lock_images

    def paused_lock(image_ids):
        if pause["value"]:
            time.sleep(pause["value"])
            pause["value"] = 0.0  # once per publish: the first lock of its images
        return lock_images(image_ids)

    ledger.lock_images = paused_lock
    smaller = photo_bytes(*plan["new_size"]) if role == "replace" else b""

    for k, round_ in enumerate(plan["rounds"]):
        rnd = random.Random(f"{plan['seed']}-{k}")
        hold, offset = rnd.uniform(0.1, plan["max_pause"]), rnd.uniform(0, plan["max_pause"])
        delay = time.time() - (plan["start"] + k * plan["period"])
        if delay < 0:
            time.sleep(-delay)
        if role == "publish":
            from cast.models import Post

            pause["value"] = hold
            publish_post(Post.objects.get(pk=round_["post"]))
        else:
            time.sleep(offset)
            image = Image.objects.get(pk=round_["image"])
            image.file = SimpleUploadedFile(f"replaced-{k}.jpg", smaller, content_type="image/jpeg")
            image.save()
    print(json.dumps({"done": len(plan["rounds"])}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main(sys.argv[1], json.loads(sys.argv[2]))
