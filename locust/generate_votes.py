#!/usr/bin/env python3
"""Writes a votes file in the seed's format: a JSON array of
{"name", "album", "year", "rank"}, every value a string, as Locust sends them.

    python3 locust/generate_votes.py --count 100000 --output /tmp/votes-100k.json

The albums are real records of Guatemalan bands (see CATALOG); each album has
a popularity (how often it is voted for) and a mean rank, so the standings and
the Grafana charts are not flat. The same --seed gives the same file.
Standard library only, so it runs with any Python 3.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# (band, album, year, popularity weight, mean rank out of 10). Years checked
# against the bands' discographies; the weights and mean ranks are invented.
CATALOG = [
    ("Alux Nahual", "Alux Nahual", 1981, 3, 7.5),
    ("Alux Nahual", "Conquista", 1982, 2, 7.0),
    ("Alux Nahual", "Alto al Fuego", 1987, 4, 8.5),
    ("Bohemia Suburbana", "Sombras en el Jardín", 1993, 3, 8.0),
    ("Bohemia Suburbana", "Sub", 2001, 2, 6.5),
    ("Bohemia Suburbana", "Imaginaria Sonora", 2015, 3, 7.5),
]

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "votes.json"


def generate(count: int, seed: int) -> list[dict[str, str]]:
    """`count` votes drawn from CATALOG by popularity, each rank a whole
    number from 0 to 10 around the album's mean."""
    rng = random.Random(seed)
    weights = [entry[3] for entry in CATALOG]
    votes = []
    for band, album, year, _, mean in rng.choices(CATALOG, weights=weights, k=count):
        rank = min(10, max(0, round(rng.gauss(mean, 1.5))))
        votes.append({"name": band, "album": album, "year": str(year), "rank": str(rank)})
    return votes


def dumps(votes: list[dict[str, str]]) -> str:
    """One vote per line, so the file diffs and greps well."""
    lines = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in votes)
    return f"[\n{lines}\n]\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=120, help="number of votes [120]")
    parser.add_argument("--seed", type=int, default=1979, help="random seed; the same seed gives the same file [1979]")
    parser.add_argument(
        "--output", "-o", default=str(DEFAULT_OUTPUT), help="file to write, '-' for stdout [locust/data/votes.json]"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    text = dumps(generate(args.count, args.seed))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.count} votes to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
