"""The claim table's indexes: inserting one 100-image post's claims with the old and the new index set.

Two scratch tables on PostgreSQL with the same 200k filler rows, one with the five indexes of migration 0001
(primary key, post, image, ``(image, filter_spec)``, unique ``(post, image, filter_spec)``), one with the three
of migration 0002 (primary key, post, unique ``(image, filter_spec, post)``); the INSERT the ledger sends
(``ledger.insert_new``: ``unnest`` arrays, ``ON CONFLICT DO NOTHING``), rolled back, interleaved rounds.

    python benchmarks/claim_indexes.py [--dsn "host=127.0.0.1 user=postgres dbname=postgres"] [--rounds 15]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import psycopg

COLUMNS = "id bigserial primary key, post_id int not null, image_id int not null, "
COLUMNS += "filter_spec varchar(255) not null, created_at timestamptz not null"
INDEX_SETS = {
    "old": [
        f"create table bench_claims_old ({COLUMNS}, unique (post_id, image_id, filter_spec))",
        "create index on bench_claims_old (post_id)",
        "create index on bench_claims_old (image_id)",
        "create index on bench_claims_old (image_id, filter_spec)",
    ],
    "new": [
        f"create table bench_claims_new ({COLUMNS}, unique (image_id, filter_spec, post_id))",
        "create index on bench_claims_new (post_id)",
    ],
}
SPECS = [f"width-{w}{suffix}" for w in (107, 214, 321, 987, 1974) for suffix in ("", "|format-avif")] + ["width-2961"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="host=127.0.0.1 user=postgres dbname=postgres")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        for name, statements in INDEX_SETS.items():
            cur.execute(f"drop table if exists bench_claims_{name}")
            for statement in statements:
                cur.execute(statement)
            cur.execute(
                f"insert into bench_claims_{name} (post_id, image_id, filter_spec, created_at) "
                "select p, (p * 7 + i) % 20000, 'width-' || s, now() from generate_series(100, 10100) p, "
                "generate_series(1, 2) i, generate_series(1, 10) s on conflict do nothing"
            )
            cur.execute(f"analyze bench_claims_{name}")
        images, specs = map(list, zip(*[(i, s) for i in range(30001, 30101) for s in SPECS], strict=True))
        now = datetime.datetime.now(datetime.UTC)
        ms: dict[str, list[float]] = {name: [] for name in INDEX_SETS}
        try:
            for _ in range(args.rounds):
                for name in INDEX_SETS:
                    with conn.transaction(force_rollback=True):
                        started = time.perf_counter()
                        cur.execute(
                            f"insert into bench_claims_{name} (post_id, image_id, filter_spec, created_at) "
                            "select %s, i, s, %s from unnest(%s::bigint[], %s::varchar(255)[]) as u (i, s) "
                            "on conflict do nothing",
                            [4, now, images, specs],
                        )
                        ms[name].append((time.perf_counter() - started) * 1000)
        finally:
            for name in INDEX_SETS:
                cur.execute(f"drop table if exists bench_claims_{name}")
    result = {name: {"median_ms": statistics.median(v), "min_ms": min(v)} for name, v in ms.items()}
    result["new/old"] = result["new"]["median_ms"] / result["old"]["median_ms"]
    result["claims"] = len(images)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
