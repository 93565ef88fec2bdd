"""The votes Locust sends: the data file (the seed's format), the gRPC
messages built from it, and the tally of votes the ingress accepted.

The gRPC modules are generated at run time from proto/votes.proto with
grpcio-tools (`grpc.protos_and_services`), so no generated code is kept in
the repository and the stubs always match the proto.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent / "proto"
DEFAULT_VOTES_FILE = HERE / "data" / "votes.json"
FIELDS = ("name", "album", "year", "rank")
ROUTES = ("grpc", "http")


@functools.cache
def load_votes(path: str) -> list[dict[str, str]]:
    """Reads a votes file (once per process): a non-empty JSON array of {"name", "album", "year",
    "rank"}, every value a string, year a whole number and rank a number.
    A bad file is refused whole, naming the first bad item, so a load test
    never measures the ingress rejecting its own data."""
    votes = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(votes, list) or not votes:
        raise ValueError(f"{path}: expected a non-empty JSON array of votes")
    for i, vote in enumerate(votes):
        if not isinstance(vote, dict) or any(not isinstance(vote.get(f), str) for f in FIELDS):
            raise ValueError(f"{path}: item {i} is not an object with string fields {', '.join(FIELDS)}: {vote!r}")
        try:
            int(vote["year"])
            float(vote["rank"])
        except ValueError as e:
            raise ValueError(f"{path}: item {i}: year must be a whole number and rank a number: {e}") from None
    return votes


class Feed:
    """Cycles through the votes from a random starting point, so users that
    share a file do not all send the same vote at the same time."""

    def __init__(self, votes: list[dict[str, str]]):
        start = random.randrange(len(votes))
        self._votes = itertools.cycle(votes[start:] + votes[:start])

    def take(self, n: int) -> list[dict[str, str]]:
        return list(itertools.islice(self._votes, n))


@functools.cache
def grpc_modules() -> tuple[Any, Any]:
    """(votes_pb2, votes_pb2_grpc) generated from proto/votes.proto."""
    import grpc

    if str(PROTO_DIR) not in sys.path:
        sys.path.append(str(PROTO_DIR))
    return grpc.protos_and_services("votes.proto")


def to_message(pb: Any, vote: dict[str, str]) -> Any:
    """A votes.v1.Vote with every field set explicitly (they are proto3
    `optional`: an unset field would be reported missing)."""
    return pb.Vote(name=vote["name"], album=vote["album"], year=int(vote["year"]), rank=float(vote["rank"]))


class Tally:
    """Per route, the votes the ingress accepted (acknowledged by Kafka) and
    those it did not (rejected, unavailable, or the request failed). A batch
    counts its accepted items only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = {route: {"accepted": 0, "not_accepted": 0} for route in ROUTES}

    def add(self, route: str, accepted: int, not_accepted: int) -> None:
        with self._lock:
            self._counts[route]["accepted"] += accepted
            self._counts[route]["not_accepted"] += not_accepted

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {route: dict(c) for route, c in self._counts.items()}

    def accepted(self) -> int:
        with self._lock:
            return sum(c["accepted"] for c in self._counts.values())
