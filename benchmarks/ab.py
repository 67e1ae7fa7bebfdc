"""Run one benchmark script at an earlier commit and at this checkout, alternately, and compare figures.

For changes a script cannot load side by side in one process (a new schema, a new module layout): the earlier
commit is checked out into a temporary git worktree, and each round runs its copy of the script, then this one,
both with the same arguments and this virtualenv. Figures are medians over the rounds, ratios this / earlier.

    python benchmarks/ab.py 1635477 --rounds 3 --metric big_site.first.ledger_ms \\
        -- planning_cost.py --db postgres --counts 100 --repeat 9 --plan-renditions 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metric", action="append", required=True, help="dotted path into the script's JSON")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison to FILE")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, script = parser.parse_args(argv[:split]), argv[split + 1 :]
    if not script:
        parser.error("name the benchmark script and its arguments after --")

    with tempfile.TemporaryDirectory(prefix="auto-renditions-ab-") as tmp:
        earlier = Path(tmp) / "earlier"
        subprocess.run(["git", "worktree", "add", "--detach", str(earlier), args.ref], cwd=ROOT, check=True)
        try:
            figures: dict[str, dict[str, list[float]]] = {"earlier": {}, "this": {}}
            for n in range(args.rounds):
                for label, tree in (("earlier", earlier), ("this", ROOT)):
                    out = Path(tmp) / f"{label}-{n}.json"
                    command = [sys.executable, str(tree / "benchmarks" / script[0]), *script[1:], "--json", str(out)]
                    print(f"round {n + 1}/{args.rounds}: {label} ({tree})", file=sys.stderr, flush=True)
                    subprocess.run(command, cwd=tree, check=True, stdout=subprocess.DEVNULL)
                    result = json.loads(out.read_text())
                    for metric in args.metric:
                        figures[label].setdefault(metric, []).append(_pick(result, metric))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(earlier)], cwd=ROOT, check=False)

    comparison = {
        "earlier": args.ref,
        "rounds": args.rounds,
        "script": script,
        "metrics": {
            metric: {
                "earlier": figures["earlier"][metric],
                "this": figures["this"][metric],
                "earlier_median": statistics.median(figures["earlier"][metric]),
                "this_median": statistics.median(figures["this"][metric]),
                "this / earlier": statistics.median(figures["this"][metric])
                / statistics.median(figures["earlier"][metric]),
            }
            for metric in args.metric
        },
    }
    text = json.dumps(comparison, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


def _pick(result: dict, path: str) -> float:
    value = result
    for part in path.split("."):
        value = value[part]
    return float(value)


if __name__ == "__main__":
    main()
