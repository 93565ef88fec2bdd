"""The votes Locust sends: the shipped file is in the seed's format, the
generator writes files the locustfile reads, bad files are refused, and the
gRPC messages carry every field."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

import ballots
import generate_votes


def test_the_shipped_votes_file_is_in_the_seed_format():
    raw = json.loads(ballots.DEFAULT_VOTES_FILE.read_text(encoding="utf-8"))
    assert all(set(vote) == {"name", "album", "year", "rank"} for vote in raw)
    assert all(isinstance(value, str) for vote in raw for value in vote.values())
    votes = ballots.load_votes(str(ballots.DEFAULT_VOTES_FILE))
    albums = defaultdict(set)
    years = defaultdict(set)
    for vote in votes:
        albums[vote["name"]].add(vote["album"])
        years[(vote["name"], vote["album"])].add(vote["year"])
        assert 0 <= float(vote["rank"]) <= 10
    assert len(albums) >= 2 and all(len(a) >= 2 for a in albums.values()), dict(albums)
    assert all(len(y) == 1 for y in years.values()), "one year per album"


def test_the_generator_writes_larger_files_the_locustfile_reads(tmp_path):
    out = tmp_path / "votes.json"
    assert generate_votes.main(["--count", "5000", "--seed", "7", "--output", str(out)]) == 0
    votes = ballots.load_votes(str(out))
    assert len(votes) == 5000
    catalog = {(band, album): str(year) for band, album, year, _, _ in generate_votes.CATALOG}
    assert {(v["name"], v["album"]) for v in votes} == set(catalog), "every album is voted for"
    assert all(catalog[(v["name"], v["album"])] == v["year"] for v in votes)
    assert all(0 <= int(v["rank"]) <= 10 for v in votes)
    assert generate_votes.generate(5000, seed=7) == votes, "the same seed gives the same votes"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "non-empty JSON array"),
        ('{"name": "x"}', "non-empty JSON array"),
        ('[{"name": "Sub", "album": "Sub", "year": 2001, "rank": "5"}]', "item 0"),
        ('[{"name": "Sub", "album": "Sub", "year": "2001"}]', "item 0"),
        (
            '[{"name": "a", "album": "b", "year": "1990", "rank": "1"}, {"name": "a", "album": "b", "year": "MMI"}]',
            "item 1",
        ),
        ('[{"name": "a", "album": "b", "year": "MMI", "rank": "1"}]', "item 0: year must be a whole number"),
    ],
)
def test_a_bad_votes_file_is_refused_naming_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem):
        ballots.load_votes(str(path))


def test_grpc_votes_set_every_field_with_its_type():
    pb, services = ballots.grpc_modules()
    message = ballots.to_message(pb, {"name": "Alux Nahual", "album": "Conquista", "year": "1982", "rank": "0"})
    assert all(message.HasField(f) for f in ("name", "album", "year", "rank")), "a rank of 0 is sent, not left unset"
    assert (message.year, message.rank) == (1982, 0.0)
    assert hasattr(services, "VoteServiceStub")


def test_the_feed_cycles_through_every_vote():
    votes = [{"name": str(i)} for i in range(7)]
    taken = ballots.Feed(votes).take(14)
    assert sorted(v["name"] for v in taken[:7]) == sorted(v["name"] for v in votes)
    assert taken[:7] == taken[7:]
