"""Which databases the app runs on, and that ``migrate`` names them on any other."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from auto_renditions.compat import SUPPORTED_DATABASES, unsupported_database


@pytest.mark.django_db
def test_the_test_database_is_supported():
    assert unsupported_database(connection) is None
    assert [e for e in checks.run_checks(databases=["default"]) if e.id == "auto_renditions.E006"] == []


@pytest.mark.parametrize(
    ("fake", "named"),
    [
        (SimpleNamespace(vendor="oracle", display_name="Oracle"), "Oracle"),
        (SimpleNamespace(vendor="mysql", mysql_is_mariadb=True, mysql_version=(10, 5, 27)), "MariaDB 10.5.27"),
    ],
)
def test_an_unsupported_database_is_named_with_the_supported_ones(fake, named):
    assert unsupported_database(fake) == f"auto_renditions supports {SUPPORTED_DATABASES}, not {named}."


@pytest.mark.django_db
def test_migrate_stops_on_an_unsupported_database_before_any_migration(monkeypatch):
    """The check is a database check: ``migrate`` runs it first and stops with the supported databases."""
    from auto_renditions import compat

    monkeypatch.setattr(compat, "unsupported_database", lambda conn: f"auto_renditions supports {SUPPORTED_DATABASES}")
    with pytest.raises(SystemCheckError, match=r"auto_renditions\.E006.*MariaDB 10\.6\+"):
        call_command("migrate", "auto_renditions", verbosity=0, skip_checks=False)
