"""One side of the publish-versus-image-deletion race, run as its own process by test_concurrency.py.

Usage: python -m tests.publish_delete_driver ROLE PLAN_JSON. ROLE is ``publish`` (an editor publishes a post
that shows the image, removing it or keeping it) or ``delete`` (another editor deletes the image). Both sides run
round k at ``start + k * period``; after its page save the publisher pauses before django-cast's media
sync and again before the ledger (a random time each), the deleter starts at a seeded random offset.
Prints one JSON line: the errors each round raised or logged.
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
    from cast import post_media
    from cast.models import Post
    from django.db.models.signals import pre_delete
    from wagtail.images.models import Image

    from auto_renditions import ledger
    from tests.factories import edit_post
    from tests.harness import ErrorLog

    if plan["without_fix"]:
        pre_delete.disconnect(sender=Image, dispatch_uid="auto_renditions.image_deleting")
    logged = ErrorLog.attached()
    pause = {"media": 0.0, "ledger": 0.0}

    def paused(step, function):
        def wrapper(*args, **kwargs):
            time.sleep(pause[step])
            return function(*args, **kwargs)

        return wrapper

    # The publish's steps after its page save: django-cast's media sync, then the ledger.
    post_media.prepare_post_media = paused("media", post_media.prepare_post_media)
    ledger.sync_posts = paused("ledger", ledger.sync_posts)
    errors = []
    for k, round_ in enumerate(plan["rounds"]):
        rnd = random.Random(f"{plan['seed']}-{k}-{role}")
        offset = rnd.uniform(0, 2 * plan["max_pause"]) if role == "delete" else 0.0
        pause.update(media=rnd.uniform(plan["max_pause"] / 2, plan["max_pause"]), ledger=rnd.uniform(0, 0.2))
        delay = time.time() - (plan["start"] + k * plan["period"] + offset)
        if delay < 0:
            time.sleep(-delay)
        logged.messages.clear()
        try:
            if role == "publish":
                post = Post.objects.get(pk=round_["post"])
                keep = [Image.objects.get(pk=i) for i in round_["keep"]]
                edit_post(post, keep)
            else:
                Image.objects.get(pk=round_["image"]).delete()
        except Exception as error:  # noqa: BLE001 - reported to the test, which judges it
            errors.append({"round": k, "raised": f"{type(error).__name__}: {error}"})
        if logged.messages:
            errors.append({"round": k, "logged": logged.messages[:]})
    print(json.dumps({"role": role, "errors": errors}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main(sys.argv[1], json.loads(sys.argv[2]))
