"""One real pipeline run, shared by the Locust and Grafana tests of a session.

`votestream all` (the debug build) runs on free ports against the local stack
with its own topic (6 partitions), consumer group, Redis key prefix and Mongo
database. Locust drives it headless over both routes, first with anonymous
single votes, then with batches from a pool of voters (who change their
ratings) with some requests sent twice (retries), then with anonymous single
votes, some sent twice, whose HTTP side goes through python-requests
(locust/requests_user.py), until Redis has decided every vote Locust saw
accepted; then the pipeline gets SIGTERM. Each run's tally predicts the Redis
counters it adds (locust/ballots.py); only one run has voters, so the
predictions add up. Before Locust, the run
sends the ingress one unreadable body and one invalid vote, so that the
ingress's refusal and rejection counters have series too. A private Prometheus
(`scripts/stack up prometheus` with its own STACK_DIR, port and configuration)
scrapes the three processes every second from before they start, and
evaluates deploy/prometheus/alerts.yml; it keeps running, for the tests to
query at the moment the run was scraped in full. The tests read what was
recorded; the keys, the database and the topic are removed and Prometheus is
stopped when the session ends.

Addresses of the stack: KAFKA_BROKERS, REDIS_URL, MONGODB_URI (defaults: the
local stack of scripts/stack).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"

# The Locust files (ballots, generate_votes) are tested directly too.
sys.path.insert(0, str(ROOT / "locust"))
import ballots  # noqa: E402

KAFKA_BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017")

USERS_PER_ROUTE = 3
SECONDS_PER_RUN = 4
# More voters than the users hold at once (6 users x 5 votes): no voter is
# ever in two requests in flight, so the tally predicts the average ranks too.
VOTERS = 60
RETRY_RATE = 0.2
# The Locust runs, one after the other: (file in locust/, HTTP user class,
# batch size, further options). One run only has voters: their ratings are
# that run's alone, and the tallies' predictions simply add up.
RUNS = (
    ("locustfile.py", "HttpUser", 1, ()),
    ("locustfile.py", "HttpUser", 5, ("--voters", str(VOTERS), "--retry-rate", str(RETRY_RATE))),
    ("requests_user.py", "RequestsHttpUser", 1, ("--retry-rate", str(RETRY_RATE))),
)
COUNTED_TIMEOUT_S = 60
SCRAPED_TIMEOUT_S = 30


@dataclass
class LocustRun:
    label: str  # the file, the HTTP class, the batch size and the further options
    batch_size: int
    options: tuple[str, ...]
    exit_code: int
    output: str  # Locust's stdout and stderr
    stats: list[dict]  # --json-file: one entry per request name
    tally: dict[str, Any]  # --tally-file: accepted / not_accepted per route, "resent", "redis" (ballots.Tally)


@dataclass
class PipelineRun:
    prefix: str  # the Redis key prefix of this run
    database: str
    locust: list[LocustRun] = field(default_factory=list)
    received: int = 0  # votes:received once it reached the votes Locust saw accepted, or at the timeout
    counted: int = 0  # votes:total at that moment
    exit_code: int | None = None  # votestream's, after SIGTERM (None: it did not stop in time)
    log: Path | None = None
    prometheus: str = ""  # the private Prometheus's base URL
    scraped_at: float = 0.0  # Unix time once Prometheus had scraped the run's final counts, before SIGTERM

    def accepted(self, route: str | None = None) -> int:
        routes = [route] if route else ["grpc", "http"]
        return sum(run.tally[r]["accepted"] for run in self.locust for r in routes)

    def predicted(self) -> dict[str, Any]:
        """The Redis counters (keys without the prefix) that all the runs
        together must leave: the sum of their tallies' predictions, which
        holds because no two runs share a voter. The rank hashes are None
        unless every run predicted them."""
        runs = [run.tally["redis"] for run in self.locust]
        total: dict[str, Any] = {}
        for key, value in runs[0].items():
            if isinstance(value, int):
                total[key] = sum(r[key] for r in runs)
            elif key == "rank:avg_by_album":
                continue
            elif any(r[key] is None for r in runs):
                total[key] = None
            else:
                total[key] = {}
                for r in runs:
                    for name, n in r[key].items():
                        total[key][name] = total[key].get(name, 0) + n
        sums = total["rank:sum_by_album"]
        total["rank:avg_by_album"] = (
            None if sums is None else {a: ballots.average(s, total["votes:by_album"][a]) for a, s in sums.items()}
        )
        return total

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log else ""


@contextlib.contextmanager
def run_pipeline(tmp: Path, redis_client: redis.Redis) -> Iterator[PipelineRun]:
    """Runs the pipeline and Locust as described above; removes what the run
    left in Kafka, Redis and MongoDB on exit."""
    name = f"pytest-locust-{uuid.uuid4().hex[:12]}"
    run = PipelineRun(prefix=f"{name}:", database=name, log=tmp / "votestream.log")
    admin = AdminClient({"bootstrap.servers": KAFKA_BROKERS})
    mongo = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
    prometheus_env = None
    try:
        admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=1)])[name].result(30)
        binary = _votestream_binary()
        grpc_port, http_port, consumer_port, logs_port, prometheus_port = _free_ports(5)
        prometheus_env = _prometheus_env(tmp, prometheus_port, ingress=http_port, consumer=consumer_port, logs=logs_port)
        _start_prometheus(prometheus_env)
        run.prometheus = f"http://127.0.0.1:{prometheus_port}"
        env = {k: v for k, v in os.environ.items() if k != "PORT"}  # PORT would move the logs app
        env.update(
            KAFKA_BROKERS=KAFKA_BROKERS,
            REDIS_URL=REDIS_URL,
            MONGODB_URI=MONGODB_URI,
            VOTES_TOPIC=name,
            CONSUMER_GROUP=name,
            REDIS_KEY_PREFIX=run.prefix,
            MONGODB_DATABASE=name,
            GRPC_ADDR=f"127.0.0.1:{grpc_port}",
            HTTP_ADDR=f"127.0.0.1:{http_port}",
            CONSUMER_HTTP_ADDR=f"127.0.0.1:{consumer_port}",
            LOGS_ADDR=f"127.0.0.1:{logs_port}",
        )
        with open(run.log, "wb") as log:
            pipeline = subprocess.Popen([str(binary), "all"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(pipeline, run, [f"http://127.0.0.1:{p}/readyz" for p in (http_port, consumer_port)])
            _send_bad_requests(http_port)
            for locustfile, http_user, batch_size, options in RUNS:
                run.locust.append(_run_locust(tmp, locustfile, http_user, batch_size, options, http_port, grpc_port))
            run.received, run.counted = _wait_decided(redis_client, run)
            run.scraped_at = _wait_scraped(run)
        finally:
            pipeline.send_signal(signal.SIGTERM)
            try:
                run.exit_code = pipeline.wait(60)
            except subprocess.TimeoutExpired:
                pipeline.kill()
                pipeline.wait()
        yield run
    finally:
        if prometheus_env:
            subprocess.run([str(STACK), "down", "prometheus"], env=prometheus_env, capture_output=True, timeout=60)
        for key in redis_client.scan_iter(match=f"{run.prefix}*", count=100):
            redis_client.delete(key)
        mongo.drop_database(name)
        mongo.close()
        for deleted in admin.delete_topics([name]).values():
            with contextlib.suppress(Exception):
                deleted.result(10)


def _votestream_binary() -> Path:
    """The debug build, brought up to date (a no-op after `cargo test`)."""
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "votestream"], cwd=ROOT, check=True)
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "votestream"


def _prometheus_env(tmp: Path, port: int, **targets: int) -> dict[str, str]:
    """The environment of `scripts/stack up|down prometheus` for a private
    Prometheus on `port` scraping each process (job name -> HTTP port) every
    second, with the alerting rules of deploy/prometheus/alerts.yml."""
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{http_port}"]}]}
                    for job, http_port in targets.items()
                ],
            }
        )
    )
    return {
        **os.environ,
        "STACK_DIR": str(tmp / "stack"),
        "PROMETHEUS_PORT": str(port),
        "PROMETHEUS_CONFIG": str(config),
    }


def _start_prometheus(env: dict[str, str]) -> None:
    """`scripts/stack up prometheus` (which builds Prometheus the first time: minutes)."""
    out = subprocess.run([str(STACK), "up", "prometheus"], env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        pytest.fail(f"scripts/stack up prometheus failed:\n{out.stderr[-3000:]}")


def prometheus_query(run: PipelineRun, expr: str, at: float | None = None) -> dict:
    """The `data` of Prometheus's instant query API for `expr` at `at` (default: now)."""
    form = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    request = urllib.request.Request(f"{run.prometheus}/api/v1/query", data=urllib.parse.urlencode(form).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]
    except urllib.error.HTTPError as e:
        pytest.fail(f"Prometheus refused {expr!r}: {e.read().decode(errors='replace')}")


def _wait_scraped(run: PipelineRun) -> float:
    """The time at which Prometheus had scraped the consumer's count of every
    vote Redis counted (or the timeout)."""
    deadline = time.monotonic() + SCRAPED_TIMEOUT_S
    while time.monotonic() < deadline:
        result = prometheus_query(run, "sum(votestream_consumer_votes_applied_total)")["result"]
        if result and float(result[0]["value"][1]) >= run.counted:
            break
        time.sleep(0.5)
    return time.time()


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_ready(pipeline: subprocess.Popen, run: PipelineRun, urls: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while pending:
        if pipeline.poll() is not None:
            pytest.fail(f"votestream exited with {pipeline.returncode} before it was ready:\n{run.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready within {timeout_s} s: {pending}\n{run.log_tail()}")
        try:
            with urllib.request.urlopen(pending[0], timeout=2) as response:
                if response.status == 200:
                    pending.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.25)


def _send_bad_requests(http_port: int) -> None:
    """One body that is no JSON (refused whole: malformed_json) and one vote
    whose rank is out of range (rejected: out_of_range); each gets 400."""
    bad_vote = {"name": "Alux Nahual", "album": "Conquista", "year": 1982, "rank": 99}
    for body in (b"{", json.dumps(bad_vote).encode()):
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/votes", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
            pytest.fail(f"the ingress accepted {body!r}")
        except urllib.error.HTTPError as e:
            assert e.code == 400, f"{body!r}: {e.code}"


def _run_locust(
    tmp: Path,
    locustfile: str,
    http_user: str,
    batch_size: int,
    options: tuple[str, ...],
    http_port: int,
    grpc_port: int,
) -> LocustRun:
    label = " ".join((locustfile, "GrpcUser", http_user, "batch size", str(batch_size), *options))
    tally, stats = tmp / f"tally-{http_user}-{batch_size}.json", tmp / f"stats-{http_user}-{batch_size}"
    users = 2 * USERS_PER_ROUTE
    result = subprocess.run(
        [
            sys.executable, "-m", "locust",
            "-f", str(ROOT / "locust" / locustfile),
            "--headless", "--only-summary", "--loglevel", "WARNING",
            "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{SECONDS_PER_RUN}s",
            "--host", f"http://127.0.0.1:{http_port}",
            "--grpc-target", f"127.0.0.1:{grpc_port}",
            "--batch-size", str(batch_size),
            "--tally-file", str(tally),
            "--json-file", str(stats),
            *options,
            "GrpcUser", http_user,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    read = lambda p: json.loads(p.read_text()) if p.exists() else None  # noqa: E731
    return LocustRun(
        label=label,
        batch_size=batch_size,
        options=options,
        exit_code=result.returncode,
        output=output,
        stats=read(Path(f"{stats}.json")) or [],
        tally=read(tally) or ballots.Tally().snapshot(),
    )


def _wait_decided(client: redis.Redis, run: PipelineRun) -> tuple[int, int]:
    """(votes:received, votes:total) once the consumer has decided as many
    records as Locust saw accepted (or at the timeout)."""
    want = run.accepted()
    deadline = time.monotonic() + COUNTED_TIMEOUT_S
    while True:
        received = int(client.get(f"{run.prefix}votes:received") or 0)
        if received >= want or time.monotonic() > deadline:
            # A short settle, so a count that overshoots shows up as such.
            time.sleep(1)
            received, counted = client.mget(f"{run.prefix}votes:received", f"{run.prefix}votes:total")
            return int(received or 0), int(counted or 0)
        time.sleep(0.2)
