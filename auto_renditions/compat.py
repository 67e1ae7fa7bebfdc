"""Small named helpers for what differs between the databases, Django and Wagtail versions the app supports.

The rest of the app asks these instead of testing versions or vendors itself.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

#: What the ledger's SQL needs: JSON functions that turn a JSON list into rows (``json_each``, ``JSON_TABLE``,
#: ``jsonb_array_elements_text``) and, for several processes, row locks or one database write lock.
SUPPORTED_DATABASES = "SQLite 3.38+, PostgreSQL, MySQL 8.0.11+ or MariaDB 10.6+"


def unsupported_database(connection: BaseDatabaseWrapper) -> str | None:
    """Why the app cannot run on this database, or ``None`` when it can."""
    vendor = connection.vendor
    if vendor == "postgresql":
        return None
    if vendor == "sqlite":
        if connection.features.supports_json_field:
            return None
        name = f"SQLite {connection.Database.sqlite_version} without its JSON functions"
        return f"auto_renditions supports {SUPPORTED_DATABASES}, not {name}."
    if vendor == "mysql":
        if connection.mysql_is_mariadb and connection.mysql_version < (10, 6):
            # JSON_TABLE, which the per-rendition view and the id lists use, came with MariaDB 10.6.
            name = f"MariaDB {'.'.join(map(str, connection.mysql_version))}"
        else:
            return None
    else:
        name = connection.display_name
    return f"auto_renditions supports {SUPPORTED_DATABASES}, not {name}."
