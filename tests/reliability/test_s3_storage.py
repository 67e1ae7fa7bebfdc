"""The core scenario through an S3-compatible object store (django-storages against a local moto server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from django.core.files.storage import storages
from django.test import override_settings
from wagtail.images.models import Rendition

from auto_renditions import status
from tests.factories import edit_post, make_image, make_post
from tests.reliability import invariants
from tests.reliability.rounds import recover

pytest.importorskip("storages.backends.s3", reason="install the test extra: pip install -e '.[test]'")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server", reason="install the test extra (moto[server])")

pytestmark = pytest.mark.reliability
BUCKET = "renditions"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_storage(s3_endpoint):
    options = {
        "bucket_name": BUCKET,
        "endpoint_url": s3_endpoint,
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        "region_name": CREDENTIALS["region_name"],
        "file_overwrite": False,
    }
    storages = {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages):
        yield boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)


def bucket_keys(client, prefix: str = "images/") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_generation_and_deletion_through_s3(blog, s3_storage):
    assert type(storages["default"]).__name__ == "S3Storage"
    kept, dropped = make_image(600, 400, seed=1), make_image(640, 480, seed=2)
    assert bucket_keys(s3_storage, "original_images/"), "originals must live in the bucket"
    post = make_post(blog, "s3", images=[kept], galleries=[[kept, dropped]])
    recover(rounds=1)

    rows = set(Rendition.objects.values_list("file", flat=True))
    doomed = set(Rendition.objects.filter(image=dropped).values_list("file", flat=True))
    assert doomed and rows == bucket_keys(s3_storage), "every rendition is an object in the bucket, and only those"
    assert invariants.problems() == []

    edit_post(post, images=[kept])  # the gallery, and with it the only use of `dropped`, goes
    recover(rounds=1)
    left = bucket_keys(s3_storage)
    assert not doomed & left, f"objects of released renditions survived: {sorted(doomed & left)}"
    assert left == set(Rendition.objects.values_list("file", flat=True)) and left
    assert not status.failures().exists()
    assert invariants.problems() == []
