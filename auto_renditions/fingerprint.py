"""The fingerprint of every setting that shapes renditions, and a system check that notices when it changed.

A change of CAST_* slot dimensions, formats or encoder quality changes what every post requires at once; the
ledger then no longer matches the site until ``manage.py auto_renditions sync --prune`` has run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router

if TYPE_CHECKING:
    from .models import SettingsFingerprint

#: django-cast settings that decide which filter specs a post's images need.
CAST_SETTINGS = (
    "CAST_IMAGE_FORMATS",
    "CAST_REGULAR_IMAGE_SLOT_DIMENSIONS",
    "CAST_GALLERY_IMAGE_SLOT_DIMENSIONS",
    "CAST_GALLERY_THUMBNAIL_RENDITIONS_SRGB",
)
#: Wagtail's encoder quality defaults (``wagtail.images.models.Filter.run``); a change re-encodes every file.
WAGTAIL_QUALITY_DEFAULTS = {
    "WAGTAILIMAGES_AVIF_QUALITY": 61,
    "WAGTAILIMAGES_HEIC_QUALITY": 80,
    "WAGTAILIMAGES_JPEG_QUALITY": 76,
    "WAGTAILIMAGES_WEBP_QUALITY": 80,
}
_QUALITY = re.compile(r"^WAGTAILIMAGES_[A-Z0-9_]+_QUALITY$")


def current_settings() -> dict[str, Any]:
    """The rendition-shaping settings as plain JSON values (tuples become lists)."""
    from cast import appsettings

    data: dict[str, Any] = {name: getattr(appsettings, name) for name in CAST_SETTINGS}
    data.update(WAGTAIL_QUALITY_DEFAULTS)
    data.update({name: getattr(settings, name) for name in dir(settings) if _QUALITY.match(name)})
    return json.loads(json.dumps(data, default=list))


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=list)


def fingerprint(data: dict[str, Any] | None = None) -> str:
    return hashlib.sha256(canonical_json(current_settings() if data is None else data).encode()).hexdigest()


def stored() -> SettingsFingerprint | None:
    """The stored fingerprint row, or ``None``."""
    from .models import SettingsFingerprint

    return SettingsFingerprint.objects.order_by("pk").first()


def store() -> str:
    """Remember the live settings as the ones the ledger was built with (keeps a single row)."""
    from .models import SettingsFingerprint

    data = current_settings()
    value = fingerprint(data)
    row = stored() or SettingsFingerprint()
    row.fingerprint, row.settings_json = value, canonical_json(data)
    row.save()
    SettingsFingerprint.objects.exclude(pk=row.pk).delete()
    return value


def changed_settings(old_json: str, new: dict[str, Any]) -> list[str]:
    try:
        old = json.loads(old_json)
    except ValueError:
        return sorted(new)
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


@register("auto_renditions", Tags.database)
def check_settings_fingerprint(
    app_configs: Sequence[AppConfig] | None = None, databases: Collection[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W010 when the settings differ from the ones ``sync`` stored; silent before the first sync or migrate.

    A database check: it runs only for the aliases Django names (``migrate``, ``check --database default``),
    so a plain ``manage.py check`` does not query the database.
    """
    from .models import SettingsFingerprint

    alias = router.db_for_read(SettingsFingerprint)
    if not databases or alias not in databases:
        return []
    try:
        if SettingsFingerprint._meta.db_table not in connections[alias].introspection.table_names():
            return []
        row = stored()
    except (DatabaseError, ImproperlyConfigured):
        return []
    if row is None:
        return []
    data = current_settings()
    if row.fingerprint == fingerprint(data):
        return []
    names = ", ".join(changed_settings(row.settings_json, data)) or "unknown"
    return [
        Warning(
            f"The settings that shape image renditions changed since the last sync ({names}): the rendition "
            "ledger no longer matches what posts require.",
            hint="Run `manage.py auto_renditions sync --prune`.",
            id="auto_renditions.W010",
        )
    ]
