"""A short headless Locust run over both routes against the real pipeline
(see conftest.py): no failures, and Redis holds exactly the counters the
tallies predict from the votes Locust reports as accepted: records received
per route, outcomes (ratings changed by voters, retries as duplicates),
current ratings per band and album, distinct voters and average ranks."""

from __future__ import annotations

from typing import Any

import pymongo

from pipeline_run import MONGODB_URI, PipelineRun, ballots

# The Redis keys a tally predicts, by type (DESIGN.md, "Redis keys").
STRINGS = ("votes:received", "votes:total", "voters:total")
COUNT_HASHES = ("votes:by_outcome", "votes:by_band", "votes:by_album", "votes:by_route", "rank:sum_by_album")


def test_locust_votes_over_both_routes_without_a_failure(pipeline_run: PipelineRun):
    for run in pipeline_run.locust:
        label = run.label
        assert run.exit_code == 0, f"{label}: locust exited {run.exit_code}:\n{run.output[-3000:]}"
        types = {entry["method"] for entry in run.stats}
        assert types == {"grpc", "POST"}, f"{label}: request types {types}:\n{run.output[-3000:]}"
        assert sum(entry["num_requests"] for entry in run.stats) > 0
        assert [entry for entry in run.stats if entry["num_failures"]] == [], label
        for route in ("grpc", "http"):
            assert run.tally[route]["accepted"] > 0, f"{label}: no vote accepted over {route}"
            assert run.tally[route]["not_accepted"] == 0, f"{label}: {run.tally}"


def test_batches_count_every_vote_they_carry(pipeline_run: PipelineRun):
    assert sorted(run.batch_size for run in pipeline_run.locust) == [1, 1, 5]
    for run in pipeline_run.locust:
        requests = sum(entry["num_requests"] for entry in run.stats)
        votes = run.tally["grpc"]["accepted"] + run.tally["http"]["accepted"]
        assert votes == run.batch_size * requests, f"{run.label}: {votes} votes in {requests} requests"


def test_voters_changed_their_ratings_and_retries_were_resent(pipeline_run: PipelineRun):
    for run in pipeline_run.locust:
        predicted = run.tally["redis"]
        outcomes = predicted["votes:by_outcome"]
        if "--retry-rate" in run.options:
            assert run.tally["resent"] > 0, f"{run.label}: no request was sent twice"
            assert outcomes["duplicate"] == run.tally["resent"], f"{run.label}: every retry of an accepted vote"
        else:
            assert run.tally["resent"] == outcomes["duplicate"] == 0, run.label
        if "--voters" in run.options:
            assert outcomes["changed"] > 0 and predicted["voters:total"] > 0, f"{run.label}: {outcomes}"
            assert predicted["rank:avg_by_album"] is not None, f"{run.label}: a voter was in two requests at once"
        else:
            assert outcomes["changed"] == predicted["voters:total"] == 0, run.label
    assert any("--voters" in run.options for run in pipeline_run.locust)


def test_redis_holds_exactly_the_counters_the_tallies_predict(pipeline_run: PipelineRun, redis_client):
    want = pipeline_run.predicted()
    assert want["votes:received"] == pipeline_run.accepted() > 0
    assert pipeline_run.received == pipeline_run.accepted(), pipeline_run.log_tail()
    assert want["votes:by_route"] == {"grpc": pipeline_run.accepted("grpc"), "http": pipeline_run.accepted("http")}
    assert want["rank:avg_by_album"] is not None, "every run predicts the average ranks"
    assert redis_counters(redis_client, pipeline_run.prefix) == want


def test_every_record_is_logged_in_mongodb_with_its_outcome(pipeline_run: PipelineRun):
    want = pipeline_run.predicted()["votes:by_outcome"]
    voter_runs = [run for run in pipeline_run.locust if "--voters" in run.options]
    with_voters = sum(run.tally[route]["accepted"] for run in voter_runs for route in ballots.ROUTES)
    with pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000) as client:
        logs = client[pipeline_run.database]["logs"]
        assert logs.count_documents({}) == pipeline_run.accepted()
        assert logs.count_documents({"route": "grpc"}) == pipeline_run.accepted("grpc")
        assert {o: logs.count_documents({"outcome": o}) for o in ballots.OUTCOMES} == want
        assert logs.count_documents({"voter": {"$ne": None}}) == with_voters > 0


def test_the_pipeline_stops_cleanly_on_sigterm(pipeline_run: PipelineRun):
    assert pipeline_run.exit_code == 0, pipeline_run.log_tail()


def redis_counters(client, prefix: str) -> dict[str, Any]:
    """What Redis holds under the keys a tally predicts, in the tally's types:
    counts as integers, averages as the strings Redis keeps; an outcome that
    never happened is absent from votes:by_outcome, that is 0."""
    got: dict[str, Any] = {key: int(client.get(prefix + key) or 0) for key in STRINGS}
    for key in COUNT_HASHES:
        got[key] = {field: int(n) for field, n in client.hgetall(prefix + key).items()}
    got["votes:by_outcome"] = {o: got["votes:by_outcome"].pop(o, 0) for o in ballots.OUTCOMES} | got["votes:by_outcome"]
    got["rank:avg_by_album"] = client.hgetall(prefix + "rank:avg_by_album")
    return got
