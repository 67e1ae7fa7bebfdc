"""One editor of the lock-contention benchmark (``test_concurrency.py``), run as its own process.

Usage: python -m tests.lock_driver INDEX PLAN_JSON. Each editor owns some posts and publishes them again and
again with random, overlapping sets of the shared images (as single images and in galleries), and now and
then replaces one shared image's file. Prints what it saw as JSON: the errors its actions raised and the
deadlocks the listeners logged and swallowed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import traceback


def main(index: int, plan: dict) -> None:
    import django

    django.setup()
    from cast.models import Post
    from django.core.files.uploadedfile import SimpleUploadedFile
    from wagtail.images.models import Image

    from tests.factories import edit_post, photo_bytes
    from tests.harness import ErrorLog

    logged = ErrorLog.attached()
    out_of_order: list[str] = []

    class OutOfOrder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "out of order" in record.getMessage():
                out_of_order.append("".join(traceback.format_stack(limit=14)[:-6]))

    ledger_logger = logging.getLogger("auto_renditions.ledger")
    ledger_logger.addHandler(OutOfOrder(logging.DEBUG))
    ledger_logger.setLevel(logging.DEBUG)
    rnd = random.Random(f"{plan['seed']}-{index}")
    sizes = [(1600, 1200), (1200, 900), (900, 1200)]
    files = {size: photo_bytes(*size) for size in sizes}
    pool, posts = plan["images"], plan["posts"][str(index)]
    errors: list[str] = []
    delay = plan["start"] - time.time()
    if delay > 0:
        time.sleep(delay)
    for n in range(plan["ops"]):
        try:
            if rnd.random() < plan["replace_share"]:
                image = Image.objects.get(pk=rnd.choice(pool))
                size = rnd.choice(sizes)
                image.file = SimpleUploadedFile(f"e{index}-{n}.jpg", files[size], content_type="image/jpeg")
                image.save()
            else:
                images = {i.pk: i for i in Image.objects.filter(pk__in=pool)}
                shown = rnd.sample(sorted(images), 2)
                galleries = [rnd.sample(sorted(images), rnd.randint(1, 4)) for _ in range(rnd.randint(0, 2))]
                edit_post(
                    Post.objects.get(pk=rnd.choice(posts)),
                    [images[i] for i in shown],
                    [[images[i] for i in g] for g in galleries],
                )
        except Exception as error:  # noqa: BLE001 - every failure is counted by the test
            errors.append(f"{type(error).__name__}: {error}")
    print(json.dumps({"errors": errors, "logged": logged.messages, "out_of_order": out_of_order[:5]}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
