"""Small named helpers for what differs between the databases, Django and Wagtail versions the app supports.

The rest of the app asks these instead of testing versions or vendors itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper

if TYPE_CHECKING:
    from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper

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
        sqlite = cast("SQLiteDatabaseWrapper", connection)
        name = f"SQLite {sqlite.Database.sqlite_version} without its JSON functions"
        return f"auto_renditions supports {SUPPORTED_DATABASES}, not {name}."
    if vendor == "mysql":
        mysql = cast("MySQLDatabaseWrapper", connection)
        if mysql.mysql_is_mariadb and mysql.mysql_version < (10, 6):
            # JSON_TABLE, which the per-rendition view and the id lists use, came with MariaDB 10.6.
            name = f"MariaDB {'.'.join(map(str, mysql.mysql_version))}"
        else:
            return None
    else:
        name = connection.display_name
    return f"auto_renditions supports {SUPPORTED_DATABASES}, not {name}."


def image_permission_policy() -> Any:
    """The permission policy of the image model: Wagtail 8's policy registry, or before it the module global
    that ``wagtail.images`` sets when the app is ready (Wagtail 7.x)."""
    try:
        from wagtail.permissions import policy_registry
    except ImportError:  # Wagtail < 8.0
        from wagtail.images import permissions

        return permissions.permission_policy
    from wagtail.images import get_image_model

    return policy_registry.get_by_type(get_image_model())


def refused_by_wagtail(image: Any, error: BaseException) -> bool:
    """Whether Wagtail refused a spec for this image, an error no retry can mend: ``InvalidFilterSpecError`` (a
    raster format for an SVG, Wagtail 7.1+), or on Wagtail 7.0 the ``AttributeError`` its SVG image class raises for
    the same request (it has no raster operations)."""
    from wagtail.images.exceptions import InvalidFilterSpecError

    if isinstance(error, InvalidFilterSpecError):
        return True
    is_svg = getattr(image, "is_svg", None)
    return isinstance(error, AttributeError) and callable(is_svg) and bool(is_svg())


try:
    from wagtail.admin.ui.tables import NumberColumn
except ImportError:  # Wagtail < 7.1: the same column, written out
    from django.contrib.humanize.templatetags.humanize import intcomma
    from wagtail.admin.ui.tables import Column

    class NumberColumn(Column):  # type: ignore[no-redef]
        """A column that shows a number with locale-aware thousands separators."""

        def get_cell_context_data(self, instance: Any, parent_context: Any) -> dict:
            context = super().get_cell_context_data(instance, parent_context)
            value = self.get_value(instance)  # 7.0 hands the template no raw value, only an unlocalized one
            context["value"] = intcomma(value) if value is not None else self.empty_value_display
            return context


__all__ = [
    "SUPPORTED_DATABASES",
    "NumberColumn",
    "image_permission_policy",
    "refused_by_wagtail",
    "unsupported_database",
]
