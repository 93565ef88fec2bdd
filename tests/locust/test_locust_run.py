"""A short headless Locust run over both routes against the real pipeline
(see conftest.py): no failures, and Redis counts exactly the votes Locust
reports as accepted, per route too."""

from __future__ import annotations

import pymongo

from pipeline_run import MONGODB_URI, PipelineRun


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


def test_redis_counts_exactly_the_votes_locust_saw_accepted(pipeline_run: PipelineRun, redis_client):
    assert pipeline_run.accepted() > 0
    assert pipeline_run.counted == pipeline_run.accepted(), pipeline_run.log_tail()
    by_route = redis_client.hgetall(f"{pipeline_run.prefix}votes:by_route")
    assert {route: int(n) for route, n in by_route.items()} == {
        "grpc": pipeline_run.accepted("grpc"),
        "http": pipeline_run.accepted("http"),
    }


def test_every_counted_vote_is_logged_in_mongodb(pipeline_run: PipelineRun):
    with pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000) as client:
        logs = client[pipeline_run.database]["logs"]
        assert logs.count_documents({}) == pipeline_run.accepted()
        assert logs.count_documents({"route": "grpc"}) == pipeline_run.accepted("grpc")


def test_the_pipeline_stops_cleanly_on_sigterm(pipeline_run: PipelineRun):
    assert pipeline_run.exit_code == 0, pipeline_run.log_tail()
