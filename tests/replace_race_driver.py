"""One side of the publish-versus-replacement race, run as its own process by test_concurrency.py.

Usage: python -m tests.replace_race_driver ROLE PLAN_JSON. ROLE is ``publish`` (a post showing the image is
published the admin's way) or ``replace`` (the image's file is replaced by a smaller one, like Wagtail's edit
form saves it). In each round the publisher stops at one of two points (files in ``plan["signals"]`` say
when): before its first image lock, or where it applies its plan (after its lock and planning read); the
replacement starts there and gets ``plan["hold"]`` seconds before the publish goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(role: str, plan: dict) -> None:
    import django

    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from wagtail.images.models import Image

    from auto_renditions import ledger
    from tests.factories import photo_bytes, publish_post

    signals = Path(plan["signals"])
    state = {"round": None}

    def wait_for(name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (signals / name).exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def pausing(function, where: str):
        """The publisher stops at ``where`` until the replacement has begun, then gives it a moment."""

        def wrapper(*args, **kwargs):
            k = state["round"]
            if k is not None and plan["rounds"][k]["where"] == where:
                state["round"] = None
                (signals / f"ready-{k}").touch()
                wait_for(f"started-{k}")
                time.sleep(plan["hold"])
            return function(*args, **kwargs)

        return wrapper

    if role == "publish":
        # Before the publish's first image lock, or where it applies its plan: the old code read the sizes
        # before either; the replacement lands in between.
        ledger.lock_images = pausing(ledger.lock_images, "lock")
        ledger._apply = pausing(ledger._apply, "apply")
    smaller = photo_bytes(*plan["new_size"]) if role == "replace" else b""

    for k, round_ in enumerate(plan["rounds"]):
        if role == "publish":
            from cast.models import Post

            state["round"] = k
            publish_post(Post.objects.get(pk=round_["post"]))
            (signals / f"published-{k}").touch()
        else:
            wait_for(f"ready-{k}")
            image = Image.objects.get(pk=round_["image"])
            image.file = SimpleUploadedFile(f"replaced-{k}.jpg", smaller, content_type="image/jpeg")
            (signals / f"started-{k}").touch()
            image.save()
            wait_for(f"published-{k}")
    print(json.dumps({"done": len(plan["rounds"])}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main(sys.argv[1], json.loads(sys.argv[2]))
