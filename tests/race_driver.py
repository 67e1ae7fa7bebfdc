"""One side of the claim-versus-delete race, run as its own process by test_concurrency.py.

Usage: python -m tests.race_driver ROLE PLAN_JSON. ROLE is ``claim`` (a post starts claiming the image) or
``delete`` (the image's other post releases it and the deletion task runs). Both sides run round k at
``start + k * period``; seeded random pauses inside each transaction widen the window where a wrong lock shows.
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
    from django.db.models.signals import pre_delete
    from wagtail.images.models import Rendition

    from auto_renditions import ledger, signals, tasks

    if plan["without_lock"]:
        ledger.lock_images = lambda image_ids: None  # the defect the test must be able to catch

    pause = {"value": 0.0}

    def hold(*args, **kwargs):
        time.sleep(pause["value"])

    # Pauses between "look" and "commit": after the claim's existence check, before the rendition's DELETE.
    signals.claims_changed.connect(hold, dispatch_uid="race.hold")
    pre_delete.connect(hold, sender=Rendition, dispatch_uid="race.hold")

    for k, round_ in enumerate(plan["rounds"]):
        rnd = random.Random(f"{plan['seed']}-{k}-{role}")
        pause["value"] = rnd.uniform(0, plan["max_pause"])
        delay = time.time() - (plan["start"] + k * plan["period"])
        if delay < 0:
            time.sleep(-delay)
        if role == "claim":
            ledger.sync_posts([round_["claimer"]])
        else:
            ledger.release_posts([round_["releaser"]])
            tasks.delete_due_renditions([round_["image"]])


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main(sys.argv[1], json.loads(sys.argv[2]))
