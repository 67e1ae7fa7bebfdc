"""One claim row per post and image (with its list of filter specs) instead of one per rendition.

A first publish of a post with 100 photos wrote about 1,080 claim rows; now it writes 100. The per-rendition
shape stays available for SQL as the view ``auto_renditions_claimedrendition`` (model ``ClaimedRendition``).
Existing claims are grouped into the new rows, and back again on reverse.
"""

import django.db.models.deletion
from django.db import NotSupportedError, migrations, models

VIEW = "auto_renditions_claimedrendition"

#: The view unnests each claim's JSON list of specs: one row per claimed rendition.
VIEW_SQL = {
    "postgresql": (
        f"CREATE VIEW {VIEW} AS SELECT c.id AS claim_id, c.post_id, c.image_id, s.filter_spec, c.created_at"
        " FROM auto_renditions_claim c CROSS JOIN LATERAL jsonb_array_elements_text(c.filter_specs) AS s (filter_spec)"
    ),
    "sqlite": (
        f"CREATE VIEW {VIEW} AS SELECT c.id AS claim_id, c.post_id, c.image_id, s.value AS filter_spec, c.created_at"
        " FROM auto_renditions_claim c, json_each(c.filter_specs) AS s"
    ),
    # MySQL 8 and MariaDB 10.6+; INVOKER, so that a dump restored under another user keeps a working view.
    "mysql": (
        f"CREATE SQL SECURITY INVOKER VIEW {VIEW} AS"
        " SELECT c.id AS claim_id, c.post_id, c.image_id, s.filter_spec, c.created_at FROM auto_renditions_claim c"
        " CROSS JOIN JSON_TABLE(c.filter_specs, '$[*]' COLUMNS (filter_spec VARCHAR(255) PATH '$')) AS s"
    ),
}


def create_view(apps, schema_editor):
    from auto_renditions.compat import unsupported_database

    problem = unsupported_database(schema_editor.connection)
    if problem:
        raise NotSupportedError(problem)
    schema_editor.execute(VIEW_SQL[schema_editor.connection.vendor])


def drop_view(apps, schema_editor):
    schema_editor.execute(f"DROP VIEW IF EXISTS {VIEW}")


def group_claims(apps, schema_editor):
    """Fold the rows of each (post, image) into the first of them."""
    Claim = apps.get_model("auto_renditions", "Claim")
    claims = Claim.objects.using(schema_editor.connection.alias)
    groups: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for pk, post_id, image_id, spec in claims.order_by("pk").values_list("pk", "post_id", "image_id", "filter_spec"):
        groups.setdefault((post_id, image_id), []).append((pk, spec))
    keep, drop = [], []
    for rows in groups.values():
        keep.append(Claim(pk=rows[0][0], filter_specs=sorted({spec for _, spec in rows})))
        drop += [pk for pk, _ in rows[1:]]
    claims.bulk_update(keep, ["filter_specs"], batch_size=500)
    for start in range(0, len(drop), 500):
        claims.filter(pk__in=drop[start : start + 500]).delete()


def expand_claims(apps, schema_editor):
    """Reverse: one row per spec again."""
    Claim = apps.get_model("auto_renditions", "Claim")
    claims = Claim.objects.using(schema_editor.connection.alias)
    first, extra = [], []
    for claim in claims.all():
        specs = claim.filter_specs or []
        if not specs:
            claim.delete()
            continue
        claim.filter_spec = specs[0]
        first.append(claim)
        extra += [
            Claim(post_id=claim.post_id, image_id=claim.image_id, filter_spec=s, created_at=claim.created_at)
            for s in specs[1:]
        ]
    claims.bulk_update(first, ["filter_spec"], batch_size=500)
    claims.bulk_create(extra, batch_size=500)


class Migration(migrations.Migration):
    dependencies = [
        ("auto_renditions", "0002_claim_indexes"),
        ("cast", "0083_post_feed_boundary_index"),
        ("wagtailimages", "0027_image_description"),
    ]

    operations = [
        migrations.AddField(
            model_name="claim",
            name="filter_specs",
            field=models.JSONField(default=list),
        ),
        migrations.RunPython(group_claims, expand_claims),
        migrations.RemoveConstraint(
            model_name="claim",
            name="auto_renditions_claim_image_spec_post",
        ),
        # A default, so that reversing the removal can add the column to existing rows again.
        migrations.AlterField(
            model_name="claim",
            name="filter_spec",
            field=models.CharField(default="", max_length=255),
        ),
        migrations.RemoveField(
            model_name="claim",
            name="filter_spec",
        ),
        migrations.AddConstraint(
            model_name="claim",
            constraint=models.UniqueConstraint(fields=("image", "post"), name="auto_renditions_claim_image_post"),
        ),
        # Not atomic: MySQL cannot roll DDL back, and Django refuses DDL inside a transaction there.
        migrations.RunPython(create_view, drop_view, atomic=False),
        migrations.CreateModel(
            name="ClaimedRendition",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "claim", "filter_spec", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "claim",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="auto_renditions.claim",
                    ),
                ),
                (
                    "post",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="cast.post",
                    ),
                ),
                (
                    "image",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="wagtailimages.image",
                    ),
                ),
                ("filter_spec", models.CharField(max_length=255)),
                ("created_at", models.DateTimeField()),
            ],
            options={
                "db_table": "auto_renditions_claimedrendition",
                "managed": False,
            },
        ),
    ]
