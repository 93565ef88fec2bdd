"""The votes Locust sends: the data file (the seed's format), the voters and
request ids they carry, the gRPC messages built from them, and the tally of
what the ingress accepted, which predicts the Redis counters exactly.

The gRPC modules are generated at run time from proto/votes.proto with
grpcio-tools (`grpc.protos_and_services`), so no generated code is kept in
the repository and the stubs always match the proto.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import sys
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent / "proto"
DEFAULT_VOTES_FILE = HERE / "data" / "votes.json"
FIELDS = ("name", "album", "year", "rank")
ROUTES = ("grpc", "http")
OUTCOMES = ("counted", "changed", "duplicate", "late")


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


def voter_id(i: int) -> str:
    return f"voter-{i:06d}"


@dataclass
class Lease:
    """The voters of one request (None for an anonymous vote), and whether
    each was the lessee's alone."""

    voters: list[str | None]
    taken: list[int]  # the pool's indexes to give back
    exclusive: bool


class VoterPool:
    """The voter ids votes are drawn from: "voter-000000" and on, `size` of
    them (0: every vote anonymous). A user leases the voters of a request, and
    of its retry, and gives them back after; a vote is drawn from the voters
    nobody holds. So a voter's requests go one after another, each once the
    previous one was acknowledged, and their order in Kafka (one partition per
    voter) is the order the tally saw them in: it predicts which rank is a
    voter's latest. When more voters are wanted at once than are free, voters
    already held are drawn too, and the lease says so: counts stay exact, the
    latest ranks do not."""

    def __init__(self, size: int, rng: random.Random | None = None):
        self.size = size
        self._rng = rng or random.Random()
        self._busy: set[int] = set()  # only the leased ones: a pool of millions costs nothing
        self._lock = threading.Lock()

    def lease(self, n: int) -> Lease:
        if not self.size:
            return Lease([None] * n, [], exclusive=True)
        taken, shared = [], []
        with self._lock:
            for _ in range(n):
                if len(self._busy) < self.size:
                    i = self._rng.randrange(self.size)
                    while i in self._busy:
                        i = self._rng.randrange(self.size)
                    self._busy.add(i)
                    taken.append(i)
                else:
                    shared.append(self._rng.randrange(self.size))
        return Lease([voter_id(i) for i in taken + shared], taken, exclusive=not shared)

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._busy.difference_update(lease.taken)


def ballots(votes: list[dict[str, str]], voters: list[str | None], request_ids: bool) -> list[dict[str, str]]:
    """The votes as sent: each with its voter, when it has one, and a fresh
    request id (unique in any run) when `request_ids`."""
    sent = []
    for vote, voter in zip(votes, voters, strict=True):
        vote = dict(vote)
        if voter is not None:
            vote["voter"] = voter
        if request_ids:
            vote["request_id"] = str(uuid.uuid4())
        sent.append(vote)
    return sent


def to_message(pb: Any, vote: dict[str, str]) -> Any:
    """A votes.v1.Vote with every field set explicitly (they are proto3
    `optional`: an unset field would be reported missing); voter and
    request_id only when the vote has them."""
    extra = {f: vote[f] for f in ("voter", "request_id") if f in vote}
    return pb.Vote(name=vote["name"], album=vote["album"], year=int(vote["year"]), rank=float(vote["rank"]), **extra)


def album_key(vote: dict[str, str]) -> str:
    """The field of votes:by_album and the rank hashes: "<band> / <album>"."""
    return f"{vote['name'].strip()} / {vote['album'].strip()}"


def micro(rank: str | float) -> int:
    """A rank in millionths of a point, as rank:sum_by_album adds them
    (rounded half away from zero)."""
    q = float(rank) * 1_000_000
    whole = math.floor(q)
    return whole + (1 if q - whole >= 0.5 else 0)


def average(rank_sum: int, count: int) -> str:
    """rank:avg_by_album's value for a rank sum (millionths) over `count` ratings."""
    return f"{rank_sum / count / 1e6:.2f}"


class Tally:
    """What the ingress accepted, and what Redis must count from it.

    Per route, the votes accepted (acknowledged by Kafka) and those not
    (rejected, unavailable, or the request failed); a batch counts its
    accepted items only. From the accepted votes, in the order they were
    acknowledged, the tally decides each one as the consumer's rules do: a
    vote resent whose first sending was accepted is a `duplicate` (the same
    request id: the same vote id); otherwise an anonymous vote, or a voter's
    first vote for an album, is `counted`, a voter's later vote for that album
    `changed` (it replaces the voter's rating). No vote is `late`: the
    ingress refuses votes outside the voting window.

    `snapshot()["redis"]` is what a run adds to a pipeline that has not seen
    its voters before, by Redis key (without the prefix). The rank hashes are
    predicted only while every voter's votes were sent one request at a time
    (see VoterPool); otherwise they are None. A request that failed yet
    reached Kafka (a timeout after the produce) is beyond any tally: the
    prediction holds for a run without failures.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = {route: {"accepted": 0, "not_accepted": 0} for route in ROUTES}
            self._outcomes = Counter({o: 0 for o in OUTCOMES})
            self._resent = 0
            self._by_band: Counter[str] = Counter()
            self._by_album: Counter[str] = Counter()
            self._rank_sum: Counter[str] = Counter()
            self._ratings: dict[tuple[str, str], int] = {}  # (voter, album key) -> rank, millionths
            self._voters: set[str] = set()
            self._ordered = True

    def record(
        self,
        route: str,
        votes: list[dict[str, str]],
        ids: list[str | None],
        first_ids: list[str | None] | None = None,
        ordered: bool = True,
    ) -> None:
        """One request's votes and what became of each: its vote id when
        accepted, else None. For a retry, `first_ids` are those of the first
        sending. `ordered`: the request's voters were the sender's alone."""
        with self._lock:
            self._ordered &= ordered
            if first_ids is not None:
                self._resent += len(votes)
            for vote, vote_id, first in zip(votes, ids, first_ids or [None] * len(votes), strict=True):
                if vote_id is None:
                    self._counts[route]["not_accepted"] += 1
                    continue
                self._counts[route]["accepted"] += 1
                self._outcomes[self._decide(vote, duplicate=first is not None)] += 1

    def _decide(self, vote: dict[str, str], duplicate: bool) -> str:
        if duplicate:
            return "duplicate"
        album, rank, voter = album_key(vote), micro(vote["rank"]), vote.get("voter")
        if voter is not None:
            old = self._ratings.get((voter, album))
            self._ratings[(voter, album)] = rank
            if old is not None:
                self._rank_sum[album] += rank - old
                return "changed"
            self._voters.add(voter)
        self._by_band[vote["name"].strip()] += 1
        self._by_album[album] += 1
        self._rank_sum[album] += rank
        return "counted"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            ranks = self._ordered
            return {
                **{route: dict(c) for route, c in self._counts.items()},
                "resent": self._resent,
                "redis": {
                    "votes:received": sum(c["accepted"] for c in self._counts.values()),
                    "votes:by_outcome": dict(self._outcomes),
                    "votes:total": sum(self._by_album.values()),
                    "votes:by_band": dict(self._by_band),
                    "votes:by_album": dict(self._by_album),
                    "votes:by_route": {r: c["accepted"] for r, c in self._counts.items() if c["accepted"]},
                    "voters:total": len(self._voters),
                    "rank:sum_by_album": dict(self._rank_sum) if ranks else None,
                    "rank:avg_by_album": (
                        {a: average(s, self._by_album[a]) for a, s in self._rank_sum.items()} if ranks else None
                    ),
                },
            }

    def accepted(self) -> int:
        with self._lock:
            return sum(c["accepted"] for c in self._counts.values())
