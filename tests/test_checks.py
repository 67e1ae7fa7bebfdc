"""System checks catch the misconfigurations that would make the app silently do nothing or the wrong thing."""

import io

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from wagtail.signals import page_published

from auto_renditions import checks as app_checks
from auto_renditions import conf, fingerprint, rendering
from auto_renditions.signal_handlers import CAST_PUBLISH_DISPATCH_UID


def ids(messages) -> set[str]:
    return {m.id for m in messages}


@pytest.mark.django_db
def test_a_correct_site_is_clean():
    messages = checks.run_checks(tags=["auto_renditions"])
    assert not [m for m in messages if m.level >= checks.WARNING and m.id.startswith("auto_renditions")]


def test_cast_synchronous_receiver_still_connected_is_an_error():
    from cast.post_media import prepare_published_post_media

    page_published.connect(prepare_published_post_media, dispatch_uid=CAST_PUBLISH_DISPATCH_UID)
    try:
        assert "auto_renditions.E004" in ids(app_checks.check_cast_receiver())
    finally:
        page_published.disconnect(dispatch_uid=CAST_PUBLISH_DISPATCH_UID)
    assert "auto_renditions.E004" not in ids(app_checks.check_cast_receiver())


def test_missing_render_fallback_is_an_error(monkeypatch):
    import cast.blocks

    monkeypatch.setattr(
        cast.blocks, "get_srcset_images_for_slots", cast.blocks.get_srcset_images_for_slots.__wrapped__
    )
    assert not rendering.installed()
    assert "auto_renditions.E005" in ids(app_checks.check_cast_receiver())


def test_django_q_missing_is_an_error(monkeypatch):
    # Changing INSTALLED_APPS would reload the app registry (and django-cast's API router); ask the check directly.
    is_installed = app_checks.apps.is_installed
    monkeypatch.setattr(app_checks.apps, "is_installed", lambda name: name != "django_q" and is_installed(name))
    assert "auto_renditions.E003" in ids(app_checks.check_django_q())


def test_sync_mode_without_debug_is_a_warning(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    settings.DEBUG = False
    assert "auto_renditions.W001" in ids(app_checks.check_django_q())
    settings.DEBUG = True
    assert "auto_renditions.W001" not in ids(app_checks.check_django_q())


def test_retry_not_above_timeout_is_a_warning(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 300, "retry": 300}
    assert "auto_renditions.W002" in ids(app_checks.check_django_q())


def check_command(*args: str) -> str:
    """What ``manage.py check`` prints about issues (warnings go to stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("check", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def sqlite_without_immediate_transactions(settings) -> None:
    default = settings.DATABASES["default"]
    if "sqlite" not in default["ENGINE"]:
        settings.DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}}
    else:
        settings.DATABASES = {"default": {**default, "OPTIONS": {}}}


def test_sqlite_without_immediate_transactions_is_a_warning(settings):
    sqlite_without_immediate_transactions(settings)
    assert "auto_renditions.W003" in ids(app_checks.check_sqlite_locking())


def test_plain_check_command_reports_sqlite_locking(settings):
    sqlite_without_immediate_transactions(settings)
    assert "auto_renditions.W003" in check_command()


@pytest.mark.django_db
def test_sqlite_locking_is_not_a_database_check(settings):
    # `check --tag database` selects the checks that query a database; W003 reads only the settings.
    sqlite_without_immediate_transactions(settings)
    assert "auto_renditions.W003" not in check_command("--tag", "database", "--database", "default")


@pytest.mark.django_db
def test_settings_fingerprint_is_a_database_check(settings):
    fingerprint.store()
    settings.CAST_IMAGE_FORMATS = ["jpeg", "webp"]
    with CaptureQueriesContext(connection) as queries:
        plain = check_command()
    assert "auto_renditions.W010" not in plain
    assert len(queries) == 0
    assert "auto_renditions.W010" in check_command("--database", "default")
    assert "auto_renditions.W010" in check_command("--tag", "database", "--database", "default")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"DELETE_GRACE_SECONDZ": 1}, "auto_renditions.E001"),
        ({"MAX_ATTEMPTS": 0}, "auto_renditions.E002"),
        ({"DELETE_GRACE_SECONDS": -5}, "auto_renditions.E002"),
        ({"TASK_TIMEOUT": "300"}, "auto_renditions.E002"),
        ({"SERIAL_RENDER_PIXELS": -1}, "auto_renditions.E002"),
        ({"KEEP_FILTER_SPECS": "max-165x165"}, "auto_renditions.E001"),  # would keep "m", "a", "x", ...
        ({"KEEP_FILTER_SPECS": ["max-165x165", 165]}, "auto_renditions.E001"),
        ({"KEEP_FILTER_SPECS": ["max-165x165", ""]}, "auto_renditions.E001"),
        ({"KEEP_FILTER_SPECS": None}, "auto_renditions.E001"),
    ],
)
def test_bad_settings_are_errors(settings, value, expected):
    settings.AUTO_RENDITIONS = value
    assert expected in ids(app_checks.check_settings())


def test_unknown_key_error_names_the_known_keys(settings):
    settings.AUTO_RENDITIONS = {"GRACE": 1}
    with pytest.raises(ValueError, match="DELETE_GRACE_SECONDS"):
        conf.get_settings()


def test_defaults_are_documented_values(settings):
    settings.AUTO_RENDITIONS = {}
    defaults = conf.get_settings()
    assert defaults.DELETE_GRACE_SECONDS == 86400 and defaults.MAX_ATTEMPTS == 3
    assert "max-165x165" in defaults.KEEP_FILTER_SPECS


def test_keep_filter_specs_string_error_shows_the_tuple_to_write(settings):
    settings.AUTO_RENDITIONS = {"KEEP_FILTER_SPECS": "max-165x165"}
    [error] = [m for m in app_checks.check_settings() if m.id == "auto_renditions.E001"]
    assert "('max-165x165',)" in error.msg


@pytest.mark.parametrize("value", [["max-165x165"], ("max-165x165", "width-400"), {"original"}, []])
def test_keep_filter_specs_collections_are_accepted(settings, value):
    settings.AUTO_RENDITIONS = {"KEEP_FILTER_SPECS": value}
    assert not app_checks.check_settings()
    assert set(conf.get_settings().KEEP_FILTER_SPECS) == set(value)


def test_preview_takeover_missing_is_an_error(monkeypatch):
    import cast.preview_media

    from auto_renditions import preview

    wrapped = getattr(cast.preview_media, preview.FUNCTION)
    monkeypatch.setattr(cast.preview_media, preview.FUNCTION, wrapped.__wrapped__)
    assert not preview.installed()
    assert "auto_renditions.E007" in ids(app_checks.check_cast_receiver())


def test_preview_path_moved_by_django_cast_is_an_error(monkeypatch):
    """django-cast's preview no longer asks the wrapped function: its renditions would be made in the request."""
    import cast.preview_media

    def from_post(cls, post):
        return None

    monkeypatch.setattr(cast.preview_media.PreviewMedia, "from_post", classmethod(from_post))
    assert "auto_renditions.E007" in ids(app_checks.check_cast_receiver())
