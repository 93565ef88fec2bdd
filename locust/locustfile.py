"""Locust load for votestream: `GrpcUser` votes over gRPC
(votes.v1.VoteService), `HttpUser` over HTTP (POST /votes). Name one class,
or both, on the command line to compare the routes under the same load:

    locust -f locust/locustfile.py --headless -u 20 -r 20 -t 1m GrpcUser HttpUser

Options (also in the web UI): --votes-file, --batch-size, --grpc-target and
--tally-file; `locust -f locust/locustfile.py --help` lists them. Every call
is a Locust request (type "grpc" or "POST", with its time, size and failure);
a request fails unless every vote in it was accepted. The tally of accepted
votes (a batch of 10 accepted counts 10) is kept per route and written to
--tally-file when the run stops. One process only: in distributed mode each
worker keeps its own tally.
"""

# grpcio blocks gevent (and so every other Locust user) unless told to
# cooperate, before any channel exists.
import grpc
import grpc.experimental.gevent

grpc.experimental.gevent.init_gevent()

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from locust import FastHttpUser, User, constant, events, task  # noqa: E402

import ballots  # noqa: E402

# Bound on one call. The ingress answers UNAVAILABLE / 503 after its produce
# timeout (5 s by default), so this only catches a hung connection.
REQUEST_TIMEOUT_S = 15.0

TALLY = ballots.Tally()


@events.init_command_line_parser.add_listener
def _options(parser):
    group = parser.add_argument_group("votestream")
    group.add_argument(
        "--votes-file",
        default=str(ballots.DEFAULT_VOTES_FILE),
        env_var="LOCUST_VOTES_FILE",
        help="JSON array of votes {name, album, year, rank} (strings), sent in a loop [locust/data/votes.json]",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        env_var="LOCUST_BATCH_SIZE",
        help="votes per request: 1 sends CastVote / a JSON object, more sends CastVotes / a JSON array [1]",
    )
    group.add_argument(
        "--grpc-target",
        default="127.0.0.1:50051",
        env_var="LOCUST_GRPC_TARGET",
        help="host:port of the gRPC ingress, for GrpcUser (HttpUser uses --host) [127.0.0.1:50051]",
    )
    group.add_argument(
        "--tally-file",
        default="",
        env_var="LOCUST_TALLY_FILE",
        help="when the run stops, write the accepted votes per route here as JSON",
    )


@events.init.add_listener
def _init(environment, **_kwargs):
    options = environment.parsed_options
    if options.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    try:
        ballots.load_votes(options.votes_file)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--votes-file: {e}") from None
    # Without a stop timeout Locust kills users mid-request when the run
    # ends: a vote could then be stored but never counted as sent. With one,
    # each user finishes its call first.
    if not environment.stop_timeout:
        environment.stop_timeout = REQUEST_TIMEOUT_S + 5


@events.test_start.add_listener
def _reset_tally(**_kwargs):
    TALLY.reset()  # each run of the web UI counts its own votes, like its stats


@events.test_stop.add_listener
def _write_tally(environment, **_kwargs):
    if environment.parsed_options.tally_file:
        Path(environment.parsed_options.tally_file).write_text(json.dumps(TALLY.snapshot(), indent=2) + "\n")


class NotAccepted(Exception):
    """Some votes of a request were rejected or unavailable."""


class GrpcError(Exception):
    """A call that ended with a gRPC status other than OK."""


class _Voter:
    """What both users share: the options and a feed of votes."""

    def _setup(self, options):
        self.batch_size = options.batch_size
        self.feed = ballots.Feed(ballots.load_votes(options.votes_file))


class GrpcUser(User, _Voter):
    """Votes over gRPC: CastVote, or CastVotes with --batch-size > 1."""

    wait_time = constant(0)

    def on_start(self):
        options = self.environment.parsed_options
        self._setup(options)
        self.pb, services = ballots.grpc_modules()
        self.channel = grpc.insecure_channel(options.grpc_target)
        self.stub = services.VoteServiceStub(self.channel)

    def on_stop(self):
        self.channel.close()

    @task
    def vote(self):
        votes = [ballots.to_message(self.pb, v) for v in self.feed.take(self.batch_size)]
        if self.batch_size == 1:
            self._call("CastVote", self.stub.CastVote, votes[0], sent=1)
        else:
            self._call("CastVotes", self.stub.CastVotes, self.pb.CastVotesRequest(votes=votes), sent=len(votes))

    def _call(self, name, method, request, sent):
        accepted, exception, length = 0, None, 0
        start = time.perf_counter()
        try:
            reply = method(request, timeout=REQUEST_TIMEOUT_S)
            length = reply.ByteSize()
            accepted = sent if name == "CastVote" else reply.accepted
            if accepted < sent:
                exception = NotAccepted(_grpc_batch_problem(reply, sent))
        except grpc.RpcError as e:
            # Status and message only: Locust groups failures by their text.
            exception = GrpcError(f"{e.code().name}: {e.details()}")
        elapsed_ms = (time.perf_counter() - start) * 1000
        TALLY.add("grpc", accepted, sent - accepted)
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )


def _grpc_batch_problem(reply, sent) -> str:
    first = next((r for r in reply.results if r.WhichOneof("outcome") != "accepted"), None)
    detail = ""
    if first is not None and first.HasField("rejected"):
        detail = f"; item {first.index}: {first.rejected.field} {first.rejected.problem}"
    elif first is not None:
        detail = f"; item {first.index}: {first.unavailable.reason}"
    return f"{reply.rejected} rejected, {reply.unavailable} unavailable of {sent}{detail}"


class HttpUser(FastHttpUser, _Voter):
    """Votes over HTTP: POST /votes with one object, or an array with
    --batch-size > 1. The values are strings, as in the seed's files."""

    host = "http://127.0.0.1:8080"
    wait_time = constant(0)
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S

    def on_start(self):
        self._setup(self.environment.parsed_options)

    @task
    def vote(self):
        votes = self.feed.take(self.batch_size)
        single = self.batch_size == 1
        accepted = 0
        with self.client.post(
            "/votes",
            json=votes[0] if single else votes,
            name="/votes" if single else "/votes (batch)",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif single:
                accepted = 1
            else:
                body = response.json()
                accepted = body["accepted"]
                if accepted < len(votes):
                    response.failure(_http_batch_problem(body, len(votes)))
        TALLY.add("http", accepted, len(votes) - accepted)


def _http_batch_problem(body, sent) -> str:
    detail = ""
    if body["rejected"]:
        first = body["rejected"][0]
        detail = f"; item {first['index']}: {first['field']} {first['problem']}"
    elif body["unavailable"]:
        first = body["unavailable"][0]
        detail = f"; item {first['index']}: {first['reason']}"
    return f"{len(body['rejected'])} rejected, {len(body['unavailable'])} unavailable of {sent}{detail}"
