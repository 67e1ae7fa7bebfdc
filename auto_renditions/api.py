"""The names a site may import from auto_renditions; they stay here when the modules behind them move.

Import after Django is set up (``post_progress`` reads the app's models).
"""

from __future__ import annotations

from .conf import DEFAULT_KEEP_FILTER_SPECS, AutoRenditionsSettings, get_settings
from .signals import claims_changed, renditions_deleted, renditions_failed, renditions_generated
from .status import PostProgress, post_progress

__all__ = [
    "DEFAULT_KEEP_FILTER_SPECS",
    "AutoRenditionsSettings",
    "PostProgress",
    "claims_changed",
    "get_settings",
    "post_progress",
    "renditions_deleted",
    "renditions_failed",
    "renditions_generated",
]
