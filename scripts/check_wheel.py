"""Install a built wheel into a fresh virtualenv and run the example site from it, away from the checkout.

    python scripts/check_wheel.py DIST/django_auto_renditions-X-py3-none-any.whl example_project/

Run by ``nox -s check_wheel`` (once per Python) with the interpreter to check. Steps: a new virtualenv in a
temporary folder; ``pip install`` the wheel (pinned by constraints.txt where a pin fits this Python); the wheel
holds the templates; a copy of example_project in the temporary folder (so nothing imports from the checkout);
``migrate``, ``check``, ``seed_demo``, ``auto_renditions sync --now`` and ``check``; the home page and a post
page render with every ``<img>`` pointing at a file that exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RENDER = """
import re, sys
from pathlib import Path
from django.conf import settings
from django.test import Client
from cast.models import Post
import auto_renditions
assert "site-packages" in auto_renditions.__file__, auto_renditions.__file__
client = Client()
pages = ["/"] + [post.url for post in Post.objects.live()]
images = 0
for url in pages:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    html = response.content.decode()
    for src in re.findall(r'<img[^>]*\\ssrc="([^"]*)"', html):
        assert src, f"empty src on {url}"
        if src.startswith(settings.MEDIA_URL):
            assert (Path(settings.MEDIA_ROOT) / src[len(settings.MEDIA_URL):]).exists(), src
        images += 1
assert images, "no <img> rendered"
print(f"rendered {len(pages)} page(s) with {images} <img> from", auto_renditions.__file__)
"""


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(*args: str | Path, cwd: Path | None = None, env: dict | None = None) -> None:
    started = time.monotonic()
    subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True)
    print(f"    ({time.monotonic() - started:.1f}s)", flush=True)


def main(wheel: Path, example: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    templates = [n for n in names if n.startswith("auto_renditions/templates/") and n.endswith(".html")]
    assert templates, f"{wheel.name} holds no templates"
    assert any(n.startswith("auto_renditions/migrations/0001") for n in names), "no migrations in the wheel"
    step(f"{wheel.name}: {len(names)} files, {len(templates)} templates")

    with tempfile.TemporaryDirectory(prefix="check-wheel-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        step(f"fresh virtualenv with Python {sys.version.split()[0]}")
        run(sys.executable, "-m", "venv", venv)
        python = venv / "bin" / "python"
        step("installing the wheel (pinned by constraints.txt)")
        run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", wheel)

        site = work / "site"
        shutil.copytree(example, site, ignore=shutil.ignore_patterns("var", "__pycache__"))
        env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH"}}
        (work / "data").mkdir()
        env.update(EXAMPLE_PROFILE="sqlite", EXAMPLE_DATA_DIR=str(work / "data"), PYTHONWARNINGS="ignore")
        os.chdir(work)  # nothing of the checkout on sys.path
        for command in (
            ["migrate", "--noinput", "-v", "0"],
            ["check", "--fail-level", "WARNING"],
            ["seed_demo", "--scale", "0.1"],
            ["auto_renditions", "sync", "--now"],
            ["auto_renditions", "check"],
            ["shell", "-c", RENDER],
        ):
            step(f"manage.py {' '.join(command if command[0] != 'shell' else ['shell', '-c', '<render pages>'])}")
            run(python, site / "manage.py", *command, cwd=site, env=env)
    step("the wheel installs and the example site runs from it")


if __name__ == "__main__":
    if len(sys.argv) != 3 or not re.search(r"\.whl$", sys.argv[1]):
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
