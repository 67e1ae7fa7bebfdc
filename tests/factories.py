"""Build a small django-cast site: photo-like images, a blog, posts with images and galleries, published
through Wagtail's real revision path (so ``page_published`` fires exactly as in the admin)."""

from __future__ import annotations

import io
import json
import random
from uuid import uuid4

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from PIL import ImageDraw
from wagtail.images.models import Image
from wagtail.models import Site


def photo_bytes(width: int, height: int, fmt: str = "JPEG", seed: int = 0, mode: str = "RGB") -> bytes:
    """A photo-like picture (gradient, shapes and noise), so encoders do real work."""
    rnd = random.Random(seed)
    picture = PILImage.linear_gradient("L").resize((width, height)).convert(mode if mode != "RGBA" else "RGB")
    draw = ImageDraw.Draw(picture)
    for _ in range(12):
        x, y = rnd.randrange(width), rnd.randrange(height)
        r = rnd.randrange(max(2, min(width, height) // 4))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    if mode == "RGBA":
        picture = picture.convert("RGBA")
        picture.putalpha(PILImage.linear_gradient("L").resize((width, height)))
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def make_image(width: int = 600, height: int = 400, *, name: str | None = None, fmt: str = "JPEG", **kw) -> Image:
    ext = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}[fmt]
    name = name or f"photo-{uuid4().hex[:8]}.{ext}"
    upload = SimpleUploadedFile(name, photo_bytes(width, height, fmt, **kw), content_type=f"image/{ext}")
    image = Image(title=name, file=upload)
    image.save()
    return image


def make_blog(slug: str = "blog"):
    from cast.models import Blog

    user = get_user_model().objects.filter(username="editor").first() or get_user_model().objects.create_superuser(
        "editor", "editor@example.com", "password"
    )
    blog = Blog(title=slug.title(), slug=slug, owner=user)
    Site.objects.get(is_default_site=True).root_page.add_child(instance=blog)
    return blog


def body(images=(), galleries=()) -> str:
    overview = [{"type": "paragraph", "value": "<p>Hello</p>"}]
    overview += [{"type": "image", "value": image.pk} for image in images]
    for gallery in galleries:
        items = [{"id": str(uuid4()), "type": "item", "value": image.pk} for image in gallery]
        overview.append({"id": str(uuid4()), "type": "gallery", "value": {"layout": "default", "gallery": items}})
    return json.dumps([{"type": "overview", "value": overview}, {"type": "detail", "value": []}])


def make_post(blog, slug: str, images=(), galleries=(), *, publish: bool = True, model=None):
    from cast.models import Post

    model = model or Post
    post = model(title=slug, slug=slug, owner=blog.owner, body=body(images, galleries), live=False)
    blog.add_child(instance=post)
    if publish:
        publish_post(post)
    return post


def publish_post(post):
    """Publish the way the admin does: a revision, then ``revision.publish()`` (fires ``page_published``)."""
    post.save_revision(user=post.owner).publish(user=post.owner)
    post.refresh_from_db()
    return post


def edit_post(post, images=(), galleries=(), *, publish: bool = True):
    post = type(post).objects.get(pk=post.pk)
    post.body = body(images, galleries)
    if publish:
        post.save_revision(user=post.owner).publish(user=post.owner)
    else:
        post.save_revision(user=post.owner)
    post.refresh_from_db()
    return post


def required(post) -> set:
    """What a live post requires, computed independently of the ledger, straight from django-cast."""
    from cast.renditions import RenditionFilters

    post = type(post).objects.get(pk=post.pk)
    if not post.live:
        return set()
    return {
        (image.pk, spec)
        for image_type, image in post.get_all_images()
        for spec in RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
    }
