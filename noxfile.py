"""The version matrix: one nox session per leg, each pinned by its own constraints file.

    nox -l                            list the sessions
    nox -s wagtail74-django60         one leg: the core tests on Wagtail 7.4, Django 6.0, Python 3.13
    nox -s mariadb                    the core and race tests on MySQL/MariaDB (127.0.0.1:3306, root)
    nox -s check_wheel                build sdist + wheel, twine check, install the wheel into a fresh virtualenv
                                      on Python 3.11 and 3.13 and run the example site from it
    nox -s lock-wagtail74-django60    re-resolve a leg's pins from PyPI into constraints/<leg>.txt

The main combination (Python 3.11, Django 5.2, Wagtail 8.0, pinned by constraints.txt) runs the whole suite
through ``scripts/test``; the legs here run the tests marked ``core`` (tests/conftest.py). Extra arguments after
``--`` go to pytest. ``scripts/test`` runs these sessions too, so CI runs the whole matrix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints"

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

#: leg -> (Python, requirements that pick the leg's versions); the main combination is constraints.txt.
LEGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wagtail70-django52": ("3.11", ("wagtail~=7.0.9", "django~=5.2.17")),
    "wagtail74-django60": ("3.13", ("wagtail~=7.4.3", "django~=6.0.8")),
    "wagtail80-django61": ("3.13", ("wagtail~=8.0.1", "django~=6.1.1")),
}
CORE = "core and not browser and not reliability"
#: What the core tests need besides the project: a leg installs these, not the whole [test] extra (moto, boto3,
#: playwright), which would double its install time.
CORE_TEST_DEPS = ("pytest", "pytest-django")


def _pytest(session: nox.Session, db: str, marker: str) -> None:
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        marker,
        *session.posargs,
        env={"AUTO_RENDITIONS_DB": db, "AUTO_RENDITIONS_BROKER": "orm"},
    )


def _leg(name: str, python: str) -> None:
    def run(session: nox.Session) -> None:
        session.install("-c", str(CONSTRAINTS / f"{name}.txt"), "-e", ".", *CORE_TEST_DEPS)
        session.run(
            "python",
            "-c",
            "import django, wagtail; print('Django', django.__version__, 'Wagtail', wagtail.__version__)",
        )
        _pytest(session, "sqlite", CORE)

    run.__doc__ = f"Core tests on {name} (Python {python}, SQLite + ORM broker)."
    nox.session(python=python, name=name)(run)

    def lock(session: nox.Session) -> None:
        """Resolve the leg's newest versions from PyPI and write them to its constraints file."""
        session.install(*LEGS[name][1], "-e", ".[test]")
        frozen = session.run("python", "-m", "pip", "freeze", "--exclude-editable", silent=True)
        header = (
            f"# {name}, Python {python}: pins for `nox -s {name}` (written by `nox -s lock-{name}`).\n"
            f"# Resolved from: {' '.join(LEGS[name][1])} and the project's [test] extra.\n"
        )
        (CONSTRAINTS / f"{name}.txt").write_text(header + frozen)

    lock.__doc__ = f"Re-resolve the pins of {name}."
    nox.session(python=python, name=f"lock-{name}", default=False)(lock)


for _name, (_python, _requirements) in LEGS.items():
    _leg(_name, _python)


@nox.session(python="3.11")
def mariadb(session: nox.Session) -> None:
    """Core and race tests on MySQL/MariaDB (AUTO_RENDITIONS_MYSQL_* for the server; needs mysqlclient's build
    dependencies: Debian's libmariadb-dev, pkg-config and gcc)."""
    session.install("-c", "constraints.txt", "-e", ".[mysql]", *CORE_TEST_DEPS)
    _pytest(session, "mysql", "(core or postgres_only) and not browser and not reliability")


@nox.session(python=["3.11", "3.13"])
def check_wheel(session: nox.Session) -> None:
    """Build and check the sdist and wheel; install the wheel into a new virtualenv and run the example site."""
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.install("-c", "constraints.txt", "build", "twine")
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    session.run("python", "-m", "twine", "check", "--strict", *map(str, dist.iterdir()))
    wheel = next(dist.glob("*.whl"))
    session.run("python", str(ROOT / "scripts" / "check_wheel.py"), str(wheel), str(ROOT / "example_project"))
