"""Settings for the test suite: a small django-cast site with auto_renditions.

The backend matrix is chosen by environment variables so that the same suite runs on every combination:

- ``AUTO_RENDITIONS_DB``: ``sqlite`` (default), ``postgres`` (``AUTO_RENDITIONS_PG_*`` for the connection) or
  ``mysql`` (MySQL/MariaDB, ``AUTO_RENDITIONS_MYSQL_*``).
- ``AUTO_RENDITIONS_BROKER``: ``orm`` (default) or ``redis`` (``AUTO_RENDITIONS_REDIS_URL``).
- ``AUTO_RENDITIONS_DB_NAME``: set by the test harness for worker subprocesses, so that they open the test
  database pytest-django created instead of the development one.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cast
from cast import CAST_APPS, CAST_MIDDLEWARE

BASE_DIR = Path(__file__).resolve().parent
RUN_DIR = Path(os.environ.get("AUTO_RENDITIONS_RUN_DIR") or tempfile.mkdtemp(prefix="auto-renditions-tests-"))
os.environ.setdefault("AUTO_RENDITIONS_RUN_DIR", str(RUN_DIR))  # worker subprocesses inherit the same folder

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    *CAST_APPS,
    "django_q",
    "auto_renditions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    *CAST_MIDDLEWARE,
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DB = os.environ.get("AUTO_RENDITIONS_DB", "sqlite")
DATABASES: dict[str, dict[str, Any]]
if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("AUTO_RENDITIONS_DB_NAME", "auto_renditions"),
            "USER": os.environ.get("AUTO_RENDITIONS_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("AUTO_RENDITIONS_PG_PASSWORD", ""),
            "HOST": os.environ.get("AUTO_RENDITIONS_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTO_RENDITIONS_PG_PORT", "5432"),
            # One test database per run, so that parallel runs on one server do not collide.
            "TEST": {"NAME": os.environ.get("AUTO_RENDITIONS_DB_NAME", f"test_ar_{RUN_DIR.name[-8:].lower()}")},
        }
    }
elif DB == "mysql":  # MySQL 8 or MariaDB 10.6+ (AUTO_RENDITIONS_MYSQL_* for the connection)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("AUTO_RENDITIONS_DB_NAME", "auto_renditions"),
            "USER": os.environ.get("AUTO_RENDITIONS_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("AUTO_RENDITIONS_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("AUTO_RENDITIONS_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTO_RENDITIONS_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {
                "NAME": os.environ.get("AUTO_RENDITIONS_DB_NAME", f"test_ar_{RUN_DIR.name[-8:].lower()}"),
                "CHARSET": "utf8mb4",
            },
        }
    }
elif DB == "sqlite":
    # A file, not :memory:, so that worker processes share the database with the test process.
    _sqlite = os.environ.get("AUTO_RENDITIONS_DB_NAME", str(RUN_DIR / "test.sqlite3"))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite,
            "TEST": {"NAME": _sqlite},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
else:  # pragma: no cover - configuration error
    raise RuntimeError(f"AUTO_RENDITIONS_DB must be 'sqlite', 'postgres' or 'mysql', not {DB!r}")

BROKER = os.environ.get("AUTO_RENDITIONS_BROKER", "orm")
Q_CLUSTER = {
    "name": os.environ.get("AUTO_RENDITIONS_Q_NAME", f"ar_tests_{RUN_DIR.name}"),
    "workers": int(os.environ.get("AUTO_RENDITIONS_Q_WORKERS", "1")),
    "timeout": 120,
    "retry": 180,
    "max_attempts": 2,
    "catch_up": False,
    "poll": 0.1,
    "ack_failures": True,
    "save_limit": 0,
    "sync": False,
}
if BROKER == "redis":
    Q_CLUSTER["redis"] = os.environ.get("AUTO_RENDITIONS_REDIS_URL", "redis://127.0.0.1:6379/15")
elif BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:  # pragma: no cover - configuration error
    raise RuntimeError(f"AUTO_RENDITIONS_BROKER must be 'orm' or 'redis', not {BROKER!r}")

# Tests delete at once; a worker subprocess can be given more via JSON (tests/harness.py Worker(app_settings=...)).
AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, **json.loads(os.environ.get("AUTO_RENDITIONS_TEST_SETTINGS", "{}"))}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = RUN_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("AUTO_RENDITIONS_MEDIA_ROOT", RUN_DIR / "media"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SITE_ID = 1
WAGTAIL_SITE_NAME = "auto_renditions tests"
WAGTAILADMIN_BASE_URL = "http://testserver"
COMMENTS_APP = "cast.comments"
CAST_COMMENTS_ENABLED = False
CRISPY_TEMPLATE_PACK = "bootstrap4"
CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap4"
DJANGO_VITE = {
    "cast": {
        "dev_mode": False,
        "static_url_prefix": "cast/vite/",
        "manifest_path": Path(cast.__file__).parent / "static" / "cast" / "vite" / "manifest.json",
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"auto_renditions": {"handlers": ["console"], "level": "WARNING"}},
}
