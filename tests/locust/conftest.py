"""Fixtures of the Locust and Grafana tests: one real pipeline run per
session (see pipeline_run.py), and a Redis client."""

from __future__ import annotations

import pytest
import redis

from pipeline_run import REDIS_URL, PipelineRun, run_pipeline  # puts locust/ on the path too


@pytest.fixture(scope="session")
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, redis_client) -> PipelineRun:
    with run_pipeline(tmp_path_factory.mktemp("pipeline"), redis_client) as run:
        yield run
