"""The settings fingerprint: canonical (spelling does not matter), and sensitive to every shaping setting."""

from __future__ import annotations

import pytest
from django.db import connection

from auto_renditions import fingerprint
from auto_renditions.models import SettingsFingerprint


def test_same_settings_spelled_differently_have_one_fingerprint(settings):
    settings.CAST_REGULAR_IMAGE_SLOT_DIMENSIONS = [(1110, 740)]
    as_tuples = fingerprint.fingerprint()
    settings.CAST_REGULAR_IMAGE_SLOT_DIMENSIONS = [[1110, 740]]
    assert fingerprint.fingerprint() == as_tuples
    settings.WAGTAILIMAGES_WEBP_QUALITY = 80  # Wagtail's default, made explicit
    assert fingerprint.fingerprint() == as_tuples


@pytest.mark.parametrize(
    "name,value",
    [
        ("CAST_IMAGE_FORMATS", ["jpeg"]),
        ("CAST_REGULAR_IMAGE_SLOT_DIMENSIONS", [(1200, 800)]),
        ("CAST_GALLERY_IMAGE_SLOT_DIMENSIONS", [(1110, 740), (160, 100)]),
        ("CAST_GALLERY_THUMBNAIL_RENDITIONS_SRGB", False),
        ("WAGTAILIMAGES_AVIF_QUALITY", 50),
        ("WAGTAILIMAGES_JPEG_QUALITY", 85),
        ("WAGTAILIMAGES_FOO_QUALITY", 10),  # any *_QUALITY setting counts
    ],
)
def test_every_shaping_setting_changes_the_fingerprint(settings, name, value):
    before = fingerprint.fingerprint()
    setattr(settings, name, value)
    assert fingerprint.fingerprint() != before
    assert name in fingerprint.changed_settings(fingerprint.canonical_json({}), fingerprint.current_settings())


@pytest.mark.django_db
def test_store_keeps_one_row_and_the_check_follows_it(settings):
    assert fingerprint.check_settings_fingerprint(databases=["default"]) == []
    fingerprint.store()
    fingerprint.store()
    assert SettingsFingerprint.objects.count() == 1
    assert fingerprint.check_settings_fingerprint(databases=["default"]) == []
    settings.CAST_IMAGE_FORMATS = ["jpeg", "webp"]
    [warning] = fingerprint.check_settings_fingerprint(databases=["default"])
    assert warning.id == "auto_renditions.W010" and "CAST_IMAGE_FORMATS" in warning.msg


@pytest.mark.django_db
def test_no_warning_before_the_table_exists(settings, monkeypatch):
    fingerprint.store()
    settings.CAST_IMAGE_FORMATS = ["jpeg"]
    assert fingerprint.check_settings_fingerprint(databases=["default"])
    monkeypatch.setattr(connection.introspection, "table_names", lambda *a, **k: ["django_migrations"])
    assert fingerprint.check_settings_fingerprint(databases=["default"]) == []
