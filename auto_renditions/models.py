"""The ownership ledger and the little state the background work needs.

- :class:`Claim`: a live post needs renditions ``filter_specs`` of ``image``; :class:`ClaimedRendition` is the same
  ledger one row per rendition (a view). The number of claims of an ``(image, filter_spec)`` is its reference
  count; only renditions that were claimed are ever deleted.
- :class:`PendingDeletion`: an ``(image, filter_spec)`` lost its last claim and goes at ``due_at``
  unless it is claimed again first.
- :class:`QueuedImage`: a generation task for the image is queued or running (with its lease).
- :class:`Failure`: a rendition that could not be made, for operators and bounded retries.
- :class:`FileDeletion`: a deleted rendition's file, until storage confirms it is gone.
- :class:`ImageLock`: one row per image, locked by every transaction that claims, releases or deletes.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class PostImageClaim(models.Model):
    """What a live post's claim and a draft's claim share: post ``post`` needs renditions ``filter_specs`` of
    ``image``."""

    # No database-level constraints (here and on the other per-image rows): a row written while another editor
    # deletes the post or image must not fail that whole commit (PostgreSQL checks deferred keys at COMMIT).
    # Django still cascades; the sweep removes the rare row that outlived its post or image.
    post = models.ForeignKey("cast.Post", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    # Indexed by the unique constraint, which leads with the image: "who claims this image?"
    image = models.ForeignKey(
        "wagtailimages.Image", on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    #: The claimed filter specs, sorted.
    filter_specs = models.JSONField(default=list)

    class Meta:
        abstract = True


class Claim(PostImageClaim):
    """Post ``post`` needs the renditions ``filter_specs`` of ``image``: the ownership ledger, one row per post
    and image.

    A first publish writes one row per image instead of one per rendition (about ten times fewer rows and index
    entries, most of a publish's ledger time on PostgreSQL); questions asked per rendition in SQL go through
    :class:`ClaimedRendition`.
    """

    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "post"], name="auto_renditions_claim_image_post")]

    def __str__(self) -> str:
        return f"post {self.post_id} claims {len(self.filter_specs)} rendition(s) of image {self.image_id}"


class ClaimedRendition(models.Model):
    """One claimed rendition, ``(post, image, filter_spec)``: a database view that unnests :class:`Claim`.

    The number of rows of an ``(image, filter_spec)`` is its reference count. Read-only (``managed = False``:
    migration ``0003`` creates the view); the ledger writes :class:`Claim` rows.
    """

    pk = models.CompositePrimaryKey("claim", "filter_spec")
    claim = models.ForeignKey(Claim, on_delete=models.DO_NOTHING, related_name="+")
    post = models.ForeignKey("cast.Post", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    image = models.ForeignKey(
        "wagtailimages.Image", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    filter_spec = models.CharField(max_length=255)
    created_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "auto_renditions_claimedrendition"

    def __str__(self) -> str:
        return f"post {self.post_id} claims image {self.image_id} {self.filter_spec}"


class PendingDeletion(models.Model):
    image = models.ForeignKey("wagtailimages.Image", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    filter_spec = models.CharField(max_length=255)
    released_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "filter_spec"], name="auto_renditions_pending_deletion_unique")
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} {self.filter_spec} due {self.due_at:%Y-%m-%d %H:%M:%S}"


class QueuedImage(models.Model):
    """An image with missing claimed renditions and a generation task on its way.

    ``token`` changes on every enqueue, so a task only removes the row if nobody queued more work meanwhile;
    ``leased_until`` keeps two workers from generating the same image twice, and ``leased_by`` names the task
    that holds it, so that only that task renews or returns it.
    """

    image = models.OneToOneField(
        "wagtailimages.Image", on_delete=models.CASCADE, primary_key=True, related_name="+", db_constraint=False
    )
    token = models.UUIDField(default=uuid.uuid4)
    queued_at = models.DateTimeField(default=timezone.now)
    leased_until = models.DateTimeField(null=True, blank=True)
    leased_by = models.UUIDField(null=True, blank=True)
    #: Leases taken since the image last finished, counted as the lease is taken: a task that dies without a
    #: word (a timeout, a killed worker, a lost connection) has used an attempt all the same.
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    #: Why the last attempt stopped, when the task could still tell.
    error = models.TextField(blank=True, default="", db_default="")

    def __str__(self) -> str:
        return f"image {self.image_id} queued {self.queued_at:%Y-%m-%d %H:%M:%S}"


class Failure(models.Model):
    image = models.ForeignKey("wagtailimages.Image", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    filter_spec = models.CharField(max_length=255)
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "filter_spec"], name="auto_renditions_failure_unique")]
        ordering = ["-last_failed_at"]

    def __str__(self) -> str:
        return f"image {self.image_id} {self.filter_spec}: {self.error} ({self.attempts} attempts)"


class FileDeletion(models.Model):
    """A rendition file to delete: written in the transaction that deletes its row, removed once the file is gone."""

    name = models.CharField(max_length=255, unique=True)
    requested_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class OrphanCheck(models.Model):
    """An image whose worker died holding its lease: rendition files it may have written without rows are looked
    for once they are old enough that no live process can still be inserting their rows (``cleanup.sweep_orphans``).
    """

    image_id = models.BigIntegerField(primary_key=True)  # no foreign key: the image may be deleted meanwhile
    original = models.CharField(max_length=255)  # the original's name, which the rendition names start with
    lost_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"orphan check for image {self.image_id} (lost at {self.lost_at})"


class ImageLock(models.Model):
    """Serialises claim, release and delete per image (no foreign key: locking a deleted image must not fail)."""

    image_id = models.BigIntegerField(primary_key=True)

    def __str__(self) -> str:
        return f"lock for image {self.image_id}"


class SettingsFingerprint(models.Model):
    """The fingerprint of the rendition-shaping settings the ledger was last built with (a single row)."""

    fingerprint = models.CharField(max_length=64)
    settings_json = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.fingerprint


class DraftClaim(PostImageClaim):
    """A provisional claim: a previewed draft of ``post`` needs the renditions ``filter_specs`` of ``image``.

    Counted like a :class:`Claim` (nothing it names is deleted while it exists), but owned by a draft: it goes when
    the post is published (its live claims take over) or deleted, and the sweep releases it at ``expires_at``, so a
    draft that is never published leaves nothing behind.
    """

    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "post"], name="auto_renditions_draft_claim_image_post")
        ]

    def __str__(self) -> str:
        return f"draft of post {self.post_id} claims {len(self.filter_specs)} rendition(s) of image {self.image_id}"
