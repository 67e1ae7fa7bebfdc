"""Subprocess roles for the randomized run: ``writer`` (editor actions) and ``reader`` (watches live posts).

Run as ``python -m tests.reliability.driver writer|reader --out FILE ...`` with the environment of
:class:`tests.harness.Worker` (same test database, media folder and broker). Each writes a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import traceback
from collections import Counter
from pathlib import Path


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()


def _upload(rnd: random.Random, name: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import photo_bytes

    width, height = rnd.randrange(200, 801, 50), rnd.randrange(150, 601, 50)
    return SimpleUploadedFile(name, photo_bytes(width, height, seed=rnd.randrange(10**6)), content_type="image/jpeg")


class Writer:
    """One editor: owns its posts and images, but picks images from the whole shared pool."""

    OPS = {
        "create_post": 14,
        "edit_add": 14,
        "edit_remove": 10,
        "edit_reorder": 6,
        "share": 8,
        "unpublish": 6,
        "republish": 8,
        "delete_post": 4,
        "new_image": 8,
        "replace_image": 5,
        "replace_image_form": 2,
        "delete_image": 3,
    }

    def __init__(self, index: int, seed: int, blog_id: int):
        from cast.models import Blog

        self.index, self.rnd = index, random.Random(seed * 1000 + index)
        self.blog = Blog.objects.get(pk=blog_id)
        self.posts: dict[int, dict] = {}  # post id -> {"images": [...], "galleries": [[...], ...]}
        self.images: list[int] = []  # images this writer created (it may replace or delete those)
        self.counter = 0
        self.done: Counter = Counter()
        self.errors: list[dict] = []

    # --- helpers -------------------------------------------------------------------------------------------
    def pool(self) -> list[int]:
        from wagtail.images.models import Image

        return sorted(Image.objects.values_list("pk", flat=True))

    def pick(self, k: int) -> list[int]:
        pool = self.pool()
        return self.rnd.sample(pool, min(k, len(pool)))

    def publish(self, post_id: int, layout: dict) -> None:
        from cast.models import Post
        from wagtail.images.models import Image

        from tests.factories import edit_post

        alive = {i.pk: i for i in Image.objects.filter(pk__in=self._ids(layout))}
        layout["images"] = [i for i in layout["images"] if i in alive]
        layout["galleries"] = [[i for i in g if i in alive] for g in layout["galleries"]]
        layout["galleries"] = [g for g in layout["galleries"] if g]
        edit_post(
            Post.objects.get(pk=post_id),
            [alive[i] for i in layout["images"]],
            [[alive[i] for i in g] for g in layout["galleries"]],
        )

    @staticmethod
    def _ids(layout: dict) -> set[int]:
        return set(layout["images"]) | {i for g in layout["galleries"] for i in g}

    def own_post(self):
        return self.rnd.choice(sorted(self.posts)) if self.posts else None

    # --- operations ----------------------------------------------------------------------------------------
    def op_create_post(self) -> None:
        from tests.factories import make_post

        self.counter += 1
        layout = {"images": self.pick(self.rnd.randint(0, 2)), "galleries": []}
        for _ in range(self.rnd.randint(0, 2)):
            layout["galleries"].append(self.pick(self.rnd.randint(1, 4)))
        post = make_post(self.blog, f"w{self.index}-p{self.counter}", publish=False)
        self.posts[post.pk] = layout
        self.publish(post.pk, layout)

    def op_edit_add(self) -> None:
        if (post_id := self.own_post()) is None:
            return self.op_create_post()
        layout = self.posts[post_id]
        if layout["galleries"] and self.rnd.random() < 0.6:
            self.rnd.choice(layout["galleries"]).extend(self.pick(1))
        else:
            layout["images"].extend(self.pick(1))
        self.publish(post_id, layout)

    def op_edit_remove(self) -> None:
        if (post_id := self.own_post()) is None:
            return
        layout = self.posts[post_id]
        lists = [lst for lst in [layout["images"], *layout["galleries"]] if lst]
        if lists:
            victim = self.rnd.choice(lists)
            victim.pop(self.rnd.randrange(len(victim)))
        self.publish(post_id, layout)

    def op_edit_reorder(self) -> None:
        if (post_id := self.own_post()) is None:
            return
        layout = self.posts[post_id]
        for lst in [layout["images"], *layout["galleries"]]:
            self.rnd.shuffle(lst)
        self.publish(post_id, layout)

    def op_share(self) -> None:
        """Show an image of another writer's post in one of ours (a cross-process shared image)."""
        from cast.models import Post

        if (post_id := self.own_post()) is None:
            return
        other = Post.objects.exclude(pk__in=self.posts).filter(images__isnull=False).order_by("?").first()
        image_ids = list(other.images.values_list("pk", flat=True)) if other else self.pick(1)
        layout = self.posts[post_id]
        layout["galleries"].append(image_ids[:3])
        self.publish(post_id, layout)

    def op_unpublish(self) -> None:
        from cast.models import Post

        if (post_id := self.own_post()) is None:
            return
        post = Post.objects.get(pk=post_id)
        if post.live:
            post.unpublish()

    def op_republish(self) -> None:
        if (post_id := self.own_post()) is None:
            return
        self.publish(post_id, self.posts[post_id])

    def op_delete_post(self) -> None:
        from cast.models import Post

        if (post_id := self.own_post()) is None:
            return
        Post.objects.get(pk=post_id).delete()
        del self.posts[post_id]

    def op_new_image(self) -> None:
        from wagtail.images.models import Image

        self.counter += 1
        image = Image(title=f"w{self.index}-i{self.counter}", file=_upload(self.rnd, f"w{self.index}.jpg"))
        image.save()
        self.images.append(image.pk)

    def _own_image(self):
        from wagtail.images.models import Image

        self.images = list(Image.objects.filter(pk__in=self.images).values_list("pk", flat=True))
        return Image.objects.get(pk=self.rnd.choice(self.images)) if self.images else None

    def op_replace_image(self) -> None:
        if (image := self._own_image()) is None:
            return self.op_new_image()
        image.file = _upload(self.rnd, f"w{self.index}-new.jpg")
        image.save()

    def op_replace_image_form(self) -> None:
        """Replace the file the way the admin's edit view does, through Wagtail's own form class."""
        from django.contrib.auth import get_user_model
        from django.db import transaction
        from wagtail.images.forms import get_image_form
        from wagtail.images.models import Image

        if (image := self._own_image()) is None:
            return self.op_new_image()
        form_class = get_image_form(Image)
        user = get_user_model().objects.get(username="editor")
        data = {"title": image.title, "collection": image.collection_id, "tags": ""}
        # A name of its own: the form deletes the replaced original, and an original whose name came back would
        # let the reader take the previous content's renditions (same name stem) for the new one's in the moment
        # between Wagtail's UPDATE of the image and the app's deletion of its renditions (and the worker cannot
        # tell either, docs/RELIABILITY.md).
        self.counter += 1
        files = {"file": _upload(self.rnd, f"w{self.index}-form{self.counter}.jpg")}
        form = form_class(data=data, files=files, instance=image, user=user)
        if not form.is_valid():
            raise AssertionError(f"image form invalid: {form.errors.as_json()}")
        # As Wagtail's edit view saves it (``EditView.form_valid``): in one transaction. The form deletes the
        # image's renditions after saving the new file; outside a transaction a worker could make the new
        # file's renditions in between, and the form would delete those.
        with transaction.atomic():
            form.save()

    def op_delete_image(self) -> None:
        if (image := self._own_image()) is None:
            return
        image_id = image.pk
        image.delete()  # sets image.pk to None
        self.images.remove(image_id)

    def run(self, ops: int) -> dict:
        from tests.harness import ErrorLog

        logged = ErrorLog.attached()
        names, weights = zip(*self.OPS.items(), strict=True)
        for _ in range(ops):
            name = self.rnd.choices(names, weights)[0]
            try:
                getattr(self, f"op_{name}")()
                self.done[name] += 1
            except Exception as error:  # noqa: BLE001 - every failure is reported to the test, which judges it
                self.errors.append(
                    {
                        "op": name,
                        "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc()[-3000:],
                    }
                )
        return {"ops": dict(self.done), "errors": self.errors, "logged": logged.messages}


def _sample_state(post_id: int | None) -> tuple[int | None, dict]:
    """One consistent snapshot: a live post, its requirement, which of those exist, and the image files."""
    from cast.models import Post
    from django.db import connection, transaction
    from wagtail.images.models import Image, Rendition

    from tests.reliability.invariants import made_from, required_by

    with transaction.atomic():
        if connection.vendor == "postgresql":
            connection.cursor().execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        posts = Post.objects.live().prefetch_related("images", "galleries__images")
        post = (posts.filter(pk=post_id).first() if post_id else None) or posts.order_by("?").first()
        if post is None:
            return None, {}
        required = required_by(post)
        image_ids = {i for i, _ in required}
        originals = Image.objects.filter(pk__in=image_ids).values_list("pk", "file", "file_hash")
        files = {pk: name for pk, name, _ in originals}
        # The name alone does not tell two files apart: Wagtail's edit form deletes the replaced original, so a
        # second replacement can take the first one's name again ("w1-form.jpg" -> "w1-form_AbCdEfG.jpg" ->
        # "w1-form.jpg"). The form also stores the new content's hash.
        versions = {pk: f"{name} {file_hash}" for pk, name, file_hash in originals}
        rows = Rendition.objects.filter(image_id__in=image_ids).values_list("image_id", "filter_spec", "file")
        # Only renditions made from the image's current file count: between ``image.save()`` with a new file and
        # the deletion of the old renditions (Wagtail's edit view is not atomic) the stale ones are still there.
        names = {(i, spec): name for i, spec, name in rows}
        current = {key for key, name in names.items() if made_from(name, files.get(key[0], ""))}
        return post.pk, {
            "published": post.last_published_at.isoformat() if post.last_published_at else "",
            "present": required & current,
            "required": required,
            "files": files,
            "versions": versions,
            "names": names,
        }


def read(stop_file: Path) -> dict:
    """Re-sample posts; a rendition that existed and is still required by an unchanged live post must exist."""
    rnd = random.Random(os.getpid())
    last: dict[int, dict] = {}
    samples = checks = 0
    violations: list[str] = []
    while not stop_file.exists():
        wanted = rnd.choice(sorted(last)) if last and rnd.random() < 0.7 else None
        post_id, state = _sample_state(wanted)
        if post_id is None:
            time.sleep(0.05)
            continue
        samples += 1
        if wanted is not None and post_id != wanted:
            last.pop(wanted, None)  # the post went offline or was deleted: its history ends
        before = last.get(post_id)
        if before and before["published"] == state["published"]:  # no publish in between
            for key in before["present"] & state["required"]:
                if before["versions"].get(key[0]) != state["versions"].get(key[0]):
                    continue  # the original was replaced: its renditions are rightly made again
                checks += 1
                if key not in state["present"]:
                    violations.append(
                        f"post {post_id}: {key} vanished while required (original {state['files'].get(key[0])}, "
                        f"rendition {before['names'].get(key)} -> {state['names'].get(key)})"
                    )
        last[post_id] = state
        time.sleep(0.01)
    return {"samples": samples, "checks": checks, "violations": violations}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "reader"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", type=int, default=100)
    parser.add_argument("--blog", type=int, default=0)
    parser.add_argument("--stop-file", default="")
    args = parser.parse_args()
    _setup()
    if args.role == "writer":
        result = Writer(args.index, args.seed, args.blog).run(args.ops)
    else:
        result = read(Path(args.stop_file))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
