"""Settings for worker and driver subprocesses of the reliability suite: the test settings plus fault knobs.

``tests/settings.py`` only reads the backend variables; the reliability suite also needs a short lease
(``RELIABILITY_TASK_TIMEOUT``) and a fault-injecting storage (``RELIABILITY_STORAGE``) inside real workers.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import AUTO_RENDITIONS

AUTO_RENDITIONS = dict(AUTO_RENDITIONS)
if os.environ.get("RELIABILITY_TASK_TIMEOUT"):
    AUTO_RENDITIONS["TASK_TIMEOUT"] = int(os.environ["RELIABILITY_TASK_TIMEOUT"])
if os.environ.get("RELIABILITY_STORAGE"):
    STORAGES = {
        "default": {"BACKEND": os.environ["RELIABILITY_STORAGE"]},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
