"""The claim table's layout: writing one 100-image post's claims, one row per rendition or one row per image.

Three scratch tables on PostgreSQL, each with filler rows for 10k other posts:

- ``rendition_0001``: a row per claimed rendition with migration 0001's five indexes (primary key, post, image,
  ``(image, filter_spec)``, unique ``(post, image, filter_spec)``);
- ``rendition_0002``: the same rows with migration 0002's three (primary key, post, unique
  ``(image, filter_spec, post)``);
- ``image_0003``: a row per image with its specs as JSON, migration 0003's layout (primary key, post, unique
  ``(image, post)``).

Each round writes the claims the way the ledger sends them (``unnest`` arrays; the per-image upsert sends the
distinct spec lists once), rolled back; variants interleaved, medians.

    python benchmarks/claim_layout.py [--dsn "host=127.0.0.1 user=postgres dbname=postgres"] [--rounds 15]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import psycopg

PER_RENDITION = "id bigserial primary key, post_id int not null, image_id int not null, "
PER_RENDITION += "filter_spec varchar(255) not null, created_at timestamptz not null"
PER_IMAGE = "id bigserial primary key, post_id int not null, image_id int not null, "
PER_IMAGE += "filter_specs jsonb not null, created_at timestamptz not null"
LAYOUTS = {
    "rendition_0001": [
        f"create table bench_claims_rendition_0001 ({PER_RENDITION}, unique (post_id, image_id, filter_spec))",
        "create index on bench_claims_rendition_0001 (post_id)",
        "create index on bench_claims_rendition_0001 (image_id)",
        "create index on bench_claims_rendition_0001 (image_id, filter_spec)",
    ],
    "rendition_0002": [
        f"create table bench_claims_rendition_0002 ({PER_RENDITION}, unique (image_id, filter_spec, post_id))",
        "create index on bench_claims_rendition_0002 (post_id)",
    ],
    "image_0003": [
        f"create table bench_claims_image_0003 ({PER_IMAGE}, unique (image_id, post_id))",
        "create index on bench_claims_image_0003 (post_id)",
    ],
}
SPECS = [f"width-{w}{suffix}" for w in (107, 214, 321, 987, 1974) for suffix in ("", "|format-avif")] + ["width-2961"]
FILL = {
    "rendition": (
        "insert into {table} (post_id, image_id, filter_spec, created_at) select p, (p * 7 + i) %% 20000, "
        "'width-' || s, now() from generate_series(100, 10100) p, generate_series(1, 2) i, generate_series(1, 10) s "
        "on conflict do nothing"
    ),
    "image": (
        "insert into {table} (post_id, image_id, filter_specs, created_at) select p, (p * 7 + i) %% 20000, "
        "%s::jsonb, now() from generate_series(100, 10100) p, generate_series(1, 2) i on conflict do nothing"
    ),
}
WRITE = {
    "rendition": (
        "insert into {table} (post_id, image_id, filter_spec, created_at) select %s, i, s, %s "
        "from unnest(%s::bigint[], %s::varchar(255)[]) as u (i, s) on conflict do nothing"
    ),
    "image": (
        "insert into {table} (post_id, image_id, filter_specs, created_at) select %s, i, (%s::jsonb[])[k], %s "
        "from unnest(%s::bigint[], %s::integer[]) as u (i, k) "
        "on conflict (image_id, post_id) do update set filter_specs = excluded.filter_specs"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="host=127.0.0.1 user=postgres dbname=postgres")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    specs_json = json.dumps(SPECS)
    image_ids = list(range(30001, 30101))
    per_rendition = list(map(list, zip(*[(i, s) for i in image_ids for s in SPECS], strict=True)))
    now = datetime.datetime.now(datetime.UTC)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        for name, statements in LAYOUTS.items():
            table = f"bench_claims_{name}"
            cur.execute(f"drop table if exists {table}")
            for statement in statements:
                cur.execute(statement)
            kind = name.split("_")[0]
            cur.execute(FILL[kind].format(table=table), [specs_json] if kind == "image" else [])
            cur.execute(f"analyze {table}")
        ms: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        try:
            for _ in range(args.rounds):
                for name in LAYOUTS:
                    table, kind = f"bench_claims_{name}", name.split("_")[0]
                    if kind == "image":
                        params = [4, [specs_json], now, image_ids, [1] * len(image_ids)]
                    else:
                        params = [4, now, *per_rendition]
                    with conn.transaction(force_rollback=True):
                        started = time.perf_counter()
                        cur.execute(WRITE[kind].format(table=table), params)
                        ms[name].append((time.perf_counter() - started) * 1000)
        finally:
            for name in LAYOUTS:
                cur.execute(f"drop table if exists bench_claims_{name}")
    result = {name: {"median_ms": statistics.median(v), "min_ms": min(v)} for name, v in ms.items()}
    for name in ("rendition_0001", "rendition_0002"):
        result[f"image_0003/{name}"] = result["image_0003"]["median_ms"] / result[name]["median_ms"]
    result["images"], result["renditions"] = len(image_ids), len(per_rendition[0])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
