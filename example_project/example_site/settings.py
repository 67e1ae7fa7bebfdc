"""A small django-cast site with auto_renditions, for trying the app out.

Two profiles, chosen by ``EXAMPLE_PROFILE``:

- ``sqlite`` (default): nothing to install or run besides Python. SQLite in IMMEDIATE transaction mode, the
  django-q2 ORM broker (tasks live in the same database), media files on the local disk.
- ``services``: PostgreSQL (``EXAMPLE_PG_*``, default 127.0.0.1:5432 user postgres, database
  ``auto_renditions_example``) and the django-q2 Redis broker (``EXAMPLE_REDIS_URL``, default 127.0.0.1:6379/0),
  the set-up for several worker hosts.

``EXAMPLE_DATA_DIR`` moves the SQLite file and the media folder (default: ``example_project/var``);
``EXAMPLE_Q_NAME`` names the django-q2 cluster (the Redis queue name).
"""

import os
from pathlib import Path

import cast
from cast import CAST_APPS, CAST_MIDDLEWARE

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR") or BASE_DIR / "var")
PROFILE = os.environ.get("EXAMPLE_PROFILE", "sqlite")

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-project-only-not-secret")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    *CAST_APPS,
    # After cast's apps: auto_renditions replaces cast's synchronous page_published receiver.
    "django_q",
    "auto_renditions",
    "demo",
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

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"
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

Q_CLUSTER = {
    "name": os.environ.get("EXAMPLE_Q_NAME", "example_site"),
    "workers": int(os.environ.get("EXAMPLE_Q_WORKERS", "2")),
    "timeout": 300,  # >= AUTO_RENDITIONS["TASK_TIMEOUT"] (default 300)
    "retry": 360,  # larger than timeout, or a slow task is delivered twice (check auto_renditions.W002)
    "max_attempts": 2,
    "ack_failures": True,
    "catch_up": False,
    "poll": 0.5,
    "save_limit": 250,
    "label": "Task queue",
}

if PROFILE == "services":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("EXAMPLE_PG_NAME", "auto_renditions_example"),
            "USER": os.environ.get("EXAMPLE_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("EXAMPLE_PG_PASSWORD", ""),
            "HOST": os.environ.get("EXAMPLE_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("EXAMPLE_PG_PORT", "5432"),
        }
    }
    Q_CLUSTER["redis"] = os.environ.get("EXAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0")
elif PROFILE == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # Web and worker processes write at once: take the write lock at BEGIN (check auto_renditions.W003).
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
    Q_CLUSTER["orm"] = "default"
else:
    raise RuntimeError(f"EXAMPLE_PROFILE must be 'sqlite' or 'services', not {PROFILE!r}")

AUTO_RENDITIONS = {
    # A released rendition survives one minute, so the demo shows deletion without waiting a day (the default).
    "DELETE_GRACE_SECONDS": int(os.environ.get("EXAMPLE_DELETE_GRACE_SECONDS", "60")),
    "SWEEP_MINUTES": 1,
}

AUTH_PASSWORD_VALIDATORS = []  # the demo login is admin / admin
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("EXAMPLE_MEDIA_ROOT") or DATA_DIR / "media")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SITE_ID = 1

WAGTAIL_SITE_NAME = "auto_renditions demo"
WAGTAILADMIN_BASE_URL = os.environ.get("EXAMPLE_BASE_URL", "http://127.0.0.1:8000")

COMMENTS_APP = "cast.comments"
CAST_COMMENTS_EXCLUDE_FIELDS = ("email", "url", "title")
CAST_COMMENTS_ENABLED = False
CRISPY_TEMPLATE_PACK = "bootstrap4"
CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap4"

# The built front-end assets ship inside the installed django-cast package.
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
    "loggers": {
        "auto_renditions": {"handlers": ["console"], "level": "INFO"},
        "django_q": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
