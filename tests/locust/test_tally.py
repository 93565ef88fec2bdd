"""The tally's prediction of the Redis counters (ballots.Tally), the voter
pool (ballots.VoterPool) and the votes as sent, without any service: changed
ratings, retries, duplicates, anonymous votes beside voters, and the counts
per band and album."""

from __future__ import annotations

import random
import uuid

import ballots

ALUX = {"name": "Alux Nahual", "album": "Conquista", "year": "1982", "rank": "7"}
SUB = {"name": "Bohemia Suburbana", "album": "Sub", "year": "2001", "rank": "5"}


def vote(base: dict, rank: str | None = None, voter: str | None = None, request_id: str | None = None) -> dict:
    sent = dict(base, rank=rank or base["rank"])
    if voter is not None:
        sent["voter"] = voter
    if request_id is not None:
        sent["request_id"] = request_id
    return sent


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def redis(tally: ballots.Tally) -> dict:
    return tally.snapshot()["redis"]


def test_anonymous_votes_all_count_as_today():
    tally = ballots.Tally()
    tally.record("grpc", [ALUX, vote(ALUX, "8")], ids(2))
    tally.record("http", [SUB], ids(1))
    assert redis(tally) == {
        "votes:received": 3,
        "votes:by_outcome": {"counted": 3, "changed": 0, "duplicate": 0, "late": 0},
        "votes:total": 3,
        "votes:by_band": {"Alux Nahual": 2, "Bohemia Suburbana": 1},
        "votes:by_album": {"Alux Nahual / Conquista": 2, "Bohemia Suburbana / Sub": 1},
        "votes:by_route": {"grpc": 2, "http": 1},
        "voters:total": 0,
        "rank:sum_by_album": {"Alux Nahual / Conquista": 15_000_000, "Bohemia Suburbana / Sub": 5_000_000},
        "rank:avg_by_album": {"Alux Nahual / Conquista": "7.50", "Bohemia Suburbana / Sub": "5.00"},
    }


def test_the_route_counts_keep_their_shape():
    tally = ballots.Tally()
    tally.record("grpc", [ALUX, SUB], [str(uuid.uuid4()), None])
    snapshot = tally.snapshot()
    assert snapshot["grpc"] == {"accepted": 1, "not_accepted": 1}
    assert snapshot["http"] == {"accepted": 0, "not_accepted": 0}
    assert tally.accepted() == 1
    assert redis(tally)["votes:by_route"] == {"grpc": 1}, "a route with no record is absent, as in Redis"


def test_a_voters_later_vote_for_the_same_album_changes_the_rating():
    tally = ballots.Tally()
    tally.record("grpc", [vote(ALUX, "3", voter="voter-000001")], ids(1))
    tally.record("http", [vote(ALUX, "9", voter="voter-000001")], ids(1))
    tally.record("grpc", [vote(ALUX, "6", voter="voter-000001")], ids(1))
    got = redis(tally)
    assert got["votes:received"] == 3
    assert got["votes:by_outcome"] == {"counted": 1, "changed": 2, "duplicate": 0, "late": 0}
    assert got["votes:total"] == 1
    assert got["votes:by_band"] == {"Alux Nahual": 1}
    assert got["votes:by_album"] == {"Alux Nahual / Conquista": 1}
    assert got["votes:by_route"] == {"grpc": 2, "http": 1}, "every record, changed ones too"
    assert got["voters:total"] == 1
    assert got["rank:sum_by_album"] == {"Alux Nahual / Conquista": 6_000_000}, "the latest rank only"
    assert got["rank:avg_by_album"] == {"Alux Nahual / Conquista": "6.00"}


def test_a_voter_rates_each_album_once_and_voters_are_counted_once():
    tally = ballots.Tally()
    tally.record("grpc", [vote(ALUX, voter="a"), vote(SUB, voter="a"), vote(SUB, "9", voter="b")], ids(3))
    got = redis(tally)
    assert got["votes:by_outcome"]["counted"] == 3
    assert got["votes:total"] == 3
    assert got["votes:by_album"] == {"Alux Nahual / Conquista": 1, "Bohemia Suburbana / Sub": 2}
    assert got["voters:total"] == 2
    assert got["rank:avg_by_album"] == {"Alux Nahual / Conquista": "7.00", "Bohemia Suburbana / Sub": "7.00"}


def test_anonymous_votes_beside_voters_count_apart_from_them():
    tally = ballots.Tally()
    tally.record("http", [vote(ALUX, "2"), vote(ALUX, "4", voter="v"), vote(ALUX, "10")], ids(3))
    tally.record("http", [vote(ALUX, "8", voter="v"), vote(ALUX, "6")], ids(2))
    got = redis(tally)
    assert got["votes:by_outcome"] == {"counted": 4, "changed": 1, "duplicate": 0, "late": 0}
    assert got["votes:total"] == 4, "three anonymous votes and one voter's rating"
    assert got["voters:total"] == 1
    assert got["rank:sum_by_album"] == {"Alux Nahual / Conquista": 26_000_000}
    assert got["rank:avg_by_album"] == {"Alux Nahual / Conquista": "6.50"}


def test_a_retry_of_an_accepted_vote_is_a_duplicate_counted_nowhere_but_received():
    tally = ballots.Tally()
    votes = [vote(ALUX, voter="v", request_id="r1"), vote(SUB, request_id="r2")]
    first = ids(2)
    tally.record("grpc", votes, first)
    tally.record("grpc", votes, first, first_ids=first)
    snapshot = tally.snapshot()
    assert snapshot["resent"] == 2
    assert snapshot["grpc"] == {"accepted": 4, "not_accepted": 0}
    got = snapshot["redis"]
    assert got["votes:received"] == 4
    assert got["votes:by_outcome"] == {"counted": 2, "changed": 0, "duplicate": 2, "late": 0}
    assert got["votes:total"] == 2
    assert got["votes:by_band"] == {"Alux Nahual": 1, "Bohemia Suburbana": 1}
    assert got["votes:by_route"] == {"grpc": 4}
    assert got["voters:total"] == 1


def test_a_retry_of_a_vote_not_accepted_the_first_time_counts_as_new():
    tally = ballots.Tally()
    votes = [vote(ALUX, voter="v", request_id="r1"), vote(SUB, voter="v", request_id="r2")]
    first = [str(uuid.uuid4()), None]  # the second item was unavailable
    tally.record("http", votes, first)
    tally.record("http", votes, [first[0], str(uuid.uuid4())], first_ids=first)
    got = redis(tally)
    assert tally.snapshot()["http"] == {"accepted": 3, "not_accepted": 1}
    assert got["votes:by_outcome"] == {"counted": 2, "changed": 0, "duplicate": 1, "late": 0}
    assert got["votes:total"] == 2


def test_a_retry_not_accepted_counts_nowhere():
    tally = ballots.Tally()
    votes = [vote(ALUX, "3", voter="v", request_id="r1")]
    first = ids(1)
    tally.record("grpc", votes, first)
    tally.record("grpc", votes, [None], first_ids=first)
    got = redis(tally)
    assert tally.snapshot()["grpc"] == {"accepted": 1, "not_accepted": 1}
    assert got["votes:received"] == 1
    assert got["votes:by_outcome"] == {"counted": 1, "changed": 0, "duplicate": 0, "late": 0}


def test_a_duplicate_leaves_the_voters_rating_as_it_was():
    tally = ballots.Tally()
    old = [vote(ALUX, "2", voter="v", request_id="r1")]
    old_ids = ids(1)
    tally.record("grpc", old, old_ids)
    tally.record("grpc", [vote(ALUX, "9", voter="v", request_id="r2")], ids(1))
    tally.record("grpc", old, old_ids, first_ids=old_ids)  # the old rating resent, after the new one
    got = redis(tally)
    assert got["votes:by_outcome"] == {"counted": 1, "changed": 1, "duplicate": 1, "late": 0}
    assert got["rank:avg_by_album"] == {"Alux Nahual / Conquista": "9.00"}


def test_band_and_album_are_trimmed_as_the_ingress_trims_them():
    tally = ballots.Tally()
    tally.record("http", [dict(ALUX, name=" Alux Nahual ", album="Conquista  "), ALUX], ids(2))
    got = redis(tally)
    assert got["votes:by_band"] == {"Alux Nahual": 2}
    assert got["votes:by_album"] == {"Alux Nahual / Conquista": 2}


def test_votes_of_voters_held_by_two_requests_at_once_keep_exact_counts_but_no_ranks():
    tally = ballots.Tally()
    tally.record("grpc", [vote(ALUX, "3", voter="v")], ids(1))
    tally.record("http", [vote(ALUX, "9", voter="v")], ids(1), ordered=False)
    got = redis(tally)
    assert got["votes:by_outcome"] == {"counted": 1, "changed": 1, "duplicate": 0, "late": 0}
    assert got["votes:total"] == 1 and got["voters:total"] == 1
    assert got["rank:sum_by_album"] is None and got["rank:avg_by_album"] is None, "Kafka may hold them either way"


def test_reset_forgets_everything():
    tally = ballots.Tally()
    tally.record("grpc", [vote(ALUX, voter="v")], ids(1), ordered=False)
    tally.reset()
    fresh = ballots.Tally()
    assert tally.snapshot() == fresh.snapshot()
    assert fresh.snapshot()["redis"]["rank:avg_by_album"] == {}


def test_the_counters_agree_with_each_other_over_a_random_mix():
    rng = random.Random(14)
    tally = ballots.Tally()
    albums = [ALUX, SUB, dict(SUB, album="Imaginaria Sonora", year="2015")]
    for _ in range(2000):
        n = rng.randint(1, 5)
        voters = [rng.choice([None, f"v{rng.randrange(40)}"]) for _ in range(n)]
        votes = [vote(rng.choice(albums), str(rng.randint(0, 10)), voter, str(uuid.uuid4())) for voter in voters]
        route = rng.choice(ballots.ROUTES)
        first = [str(uuid.uuid4()) if rng.random() < 0.95 else None for _ in votes]
        tally.record(route, votes, first)
        if rng.random() < 0.2:
            tally.record(route, votes, [i or str(uuid.uuid4()) for i in first], first_ids=first)
    got = redis(tally)
    outcomes = got["votes:by_outcome"]
    assert outcomes["changed"] > 0 and outcomes["duplicate"] > 0
    assert sum(outcomes.values()) == got["votes:received"] == sum(got["votes:by_route"].values()) == tally.accepted()
    assert got["votes:total"] == sum(got["votes:by_band"].values()) == sum(got["votes:by_album"].values())
    assert got["votes:total"] == outcomes["counted"]
    assert 0 < got["voters:total"] <= 40
    assert set(got["rank:avg_by_album"]) == set(got["votes:by_album"])
    for album, average in got["rank:avg_by_album"].items():
        assert 0 <= float(average) <= 10, album


def test_averages_are_formatted_as_redis_keeps_them():
    assert ballots.micro("7") == 7_000_000
    assert ballots.micro("7.25") == 7_250_000
    assert ballots.micro(0.0000005) == 1, "half a millionth rounds up"
    assert ballots.average(15_000_000, 2) == "7.50"
    assert ballots.average(20_000_000, 3) == "6.67"
    assert ballots.average(1_000_000, 8) == "0.12", "0.125 is a tie, rounded to even like C's printf"


def test_an_empty_pool_sends_anonymous_votes():
    lease = ballots.VoterPool(0).lease(3)
    assert lease.voters == [None, None, None] and lease.exclusive


def test_a_lease_holds_distinct_voters_until_it_is_given_back():
    pool = ballots.VoterPool(6, random.Random(1))
    first, second = pool.lease(3), pool.lease(3)
    assert first.exclusive and second.exclusive
    held = first.voters + second.voters
    assert sorted(held) == [f"voter-00000{i}" for i in range(6)], "every voter once"
    pool.release(first)
    third = pool.lease(3)
    assert third.exclusive and sorted(third.voters) == sorted(first.voters)


def test_a_pool_too_small_for_the_load_shares_voters_and_says_so():
    pool = ballots.VoterPool(2, random.Random(1))
    lease = pool.lease(3)
    assert not lease.exclusive and len(lease.voters) == 3
    assert set(lease.voters) <= {"voter-000000", "voter-000001"}
    pool.release(lease)
    assert pool.lease(2).exclusive, "the voters it held are free again"


def test_the_votes_as_sent_carry_their_voter_and_a_fresh_request_id():
    sent = ballots.ballots([ALUX, ALUX], ["voter-000007", None], request_ids=True)
    assert sent[0]["voter"] == "voter-000007" and "voter" not in sent[1]
    assert len({v["request_id"] for v in sent}) == 2
    assert "voter" not in ALUX and "request_id" not in ALUX, "the feed's votes are left as they are"
    assert ballots.ballots([ALUX], [None], request_ids=False) == [ALUX]


def test_grpc_votes_carry_voter_and_request_id_only_when_given():
    pb, _ = ballots.grpc_modules()
    message = ballots.to_message(pb, vote(ALUX, voter="voter-000001", request_id="r1"))
    assert (message.voter, message.request_id) == ("voter-000001", "r1")
    anonymous = ballots.to_message(pb, ALUX)
    assert not anonymous.HasField("voter") and not anonymous.HasField("request_id")
