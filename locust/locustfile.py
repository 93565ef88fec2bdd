"""Locust load for votestream: `GrpcUser` votes over gRPC
(votes.v1.VoteService), `HttpUser` over HTTP (POST /votes). Name one class,
or both, on the command line to compare the routes under the same load:

    locust -f locust/locustfile.py --headless -u 20 -r 20 -t 1m GrpcUser HttpUser
    locust -f locust/locustfile.py --headless -u 20 -r 20 -t 1m --voters 5000 --retry-rate 0.05 GrpcUser HttpUser

Options (also in the web UI): --votes-file, --batch-size, --grpc-target,
--voters, --retry-rate, --tally-file and --jwt-*, with their help in `_options` below
(Locust 2.47's `--help` prints before it loads the locustfile, so it omits
them). Every call is a Locust request (type "grpc" or "POST",
with its time, size and failure); a request fails unless every vote in it was
accepted, and a retry fails unless the ingress gave back the vote ids of the
first sending.

With --voters N each vote carries a voter id ("voter-000123") from a pool of
N, so voters change their ratings; a user holds the voters of a request (and
of its retry) until it is answered, so a voter's votes reach Kafka in the
order they were sent (ballots.VoterPool). With --retry-rate F every vote
carries a request id and a fraction F of requests are sent a second time,
unchanged: the votes accepted twice must count once.

With --jwt-private-key (an ingress started with --auth-jwt-keys), every
request carries a voter token, `sub` = its voter, signed once per voter
(tokens.Minter; `python3 locust/tokens.py KEY` prints the JWKS for the
ingress). A token speaks for one voter, so each request then holds the votes
of one voter from the pool (--voters is required).

The tally (ballots.Tally), written to --tally-file when the run stops, has
the votes accepted per route (a batch of 10 accepted counts 10, a retry
counts again) and, under "redis", the counters the run must leave in Redis:
votes received, by outcome, current ratings in total, per band and per album,
per route, distinct voters and, while voters were never shared between
requests in flight, the rank sums and averages. One process only: in
distributed mode each worker keeps its own tally, and voters drawn by two
workers are shared.
"""

# grpcio blocks gevent (and so every other Locust user) unless told to
# cooperate, before any channel exists.
import grpc
import grpc.experimental.gevent

grpc.experimental.gevent.init_gevent()

import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from locust import FastHttpUser, User, constant, events, task  # noqa: E402

import ballots  # noqa: E402
import tokens  # noqa: E402

# Bound on one call. The ingress answers UNAVAILABLE / 503 after its produce
# timeout (5 s by default), so this only catches a hung connection.
REQUEST_TIMEOUT_S = 15.0

TALLY = ballots.Tally()
VOTERS = ballots.VoterPool(0)  # sized by --voters when Locust starts
MINTER: tokens.Minter | None = None  # with --jwt-private-key


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
        "--voters",
        type=int,
        default=0,
        env_var="LOCUST_VOTERS",
        help="each vote carries a voter id from a pool of this many (voter-000000 ...), so voters change "
        "their ratings; 0 sends anonymous votes [0]",
    )
    group.add_argument(
        "--retry-rate",
        type=float,
        default=0.0,
        env_var="LOCUST_RETRY_RATE",
        help="fraction of requests (0 to 1) sent a second time with the same request_id(s), as a client "
        "retrying after a timeout; above 0, every vote carries a request_id [0]",
    )
    group.add_argument(
        "--tally-file",
        default="",
        env_var="LOCUST_TALLY_FILE",
        help="when the run stops, write here as JSON the votes accepted per route and the Redis counters "
        "they must give",
    )
    group.add_argument(
        "--jwt-private-key",
        default="",
        env_var="LOCUST_JWT_PRIVATE_KEY",
        help="PEM private key (Ed25519, EC P-256 or RSA): every request carries a token of its voter signed "
        "with it, for an ingress with --auth-jwt-keys; needs --voters",
    )
    group.add_argument(
        "--jwt-kid",
        default=tokens.DEFAULT_KID,
        env_var="LOCUST_JWT_KID",
        help=f"the kid in the tokens' header, the key's id in the ingress's JWKS [{tokens.DEFAULT_KID}]",
    )
    group.add_argument(
        "--jwt-issuer",
        default="",
        env_var="LOCUST_JWT_ISSUER",
        help="the tokens' iss (the ingress's --auth-jwt-issuer); none when empty",
    )
    group.add_argument(
        "--jwt-audience",
        default="",
        env_var="LOCUST_JWT_AUDIENCE",
        help="the tokens' aud (the ingress's --auth-jwt-audience); none when empty",
    )


@events.init.add_listener
def _init(environment, **_kwargs):
    options = environment.parsed_options
    if options.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    if options.voters < 0:
        raise SystemExit("--voters must be 0 or more")
    if not 0 <= options.retry_rate <= 1:
        raise SystemExit("--retry-rate must be between 0 and 1")
    global VOTERS, MINTER
    VOTERS = ballots.VoterPool(options.voters)
    if options.jwt_private_key:
        if options.voters < 1:
            raise SystemExit("--jwt-private-key needs --voters: a token names its voter")
        try:
            pem = Path(options.jwt_private_key).read_bytes()
            MINTER = tokens.Minter(pem, options.jwt_kid, options.jwt_issuer or None, options.jwt_audience or None)
        except (OSError, ValueError, TypeError) as e:
            raise SystemExit(f"--jwt-private-key: {e}") from None
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


class RetryGotOtherIds(Exception):
    """A retry was answered with vote ids other than those of its first sending."""


class _Voter:
    """What both users share: the options, a feed of votes, and one task
    around the route's `_send` (its request, reported to Locust, and the vote
    id of each item, None when not accepted)."""

    route: str

    def _setup(self, options):
        self.batch_size = options.batch_size
        self.retry_rate = options.retry_rate
        self.feed = ballots.Feed(ballots.load_votes(options.votes_file))

    def _vote(self):
        # A token speaks for one voter: with tokens, a request holds one voter's votes.
        lease = VOTERS.lease(1 if MINTER else self.batch_size)
        try:
            voters = lease.voters * self.batch_size if MINTER else lease.voters
            token = MINTER.token(lease.voters[0]) if MINTER else None
            votes = ballots.ballots(self.feed.take(self.batch_size), voters, request_ids=self.retry_rate > 0)
            ids = self._send(votes, token=token)
            TALLY.record(self.route, votes, ids, ordered=lease.exclusive)
            if self.retry_rate and random.random() < self.retry_rate:
                again = self._send(votes, token=token, first_ids=ids)
                TALLY.record(self.route, votes, again, first_ids=ids, ordered=lease.exclusive)
        finally:
            VOTERS.release(lease)


def _retry_problem(first_ids, ids) -> Exception | None:
    """A vote accepted both times must have kept its id: that is how the
    consumer knows the second one for a duplicate."""
    changed = [i for i, (a, b) in enumerate(zip(first_ids, ids)) if a is not None and b is not None and a != b]
    if changed:
        return RetryGotOtherIds(f"{len(changed)} of {len(ids)} votes accepted again under another id")
    return None


class GrpcUser(User, _Voter):
    """Votes over gRPC: CastVote, or CastVotes with --batch-size > 1."""

    wait_time = constant(0)
    route = "grpc"

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
        self._vote()

    def _send(self, votes, token=None, first_ids=None):
        messages = [ballots.to_message(self.pb, v) for v in votes]
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        single = self.batch_size == 1
        name = ("CastVote" if single else "CastVotes") + (" (retry)" if first_ids is not None else "")
        ids, exception, length = [None] * len(votes), None, 0
        start = time.perf_counter()
        try:
            if single:
                reply = self.stub.CastVote(messages[0], timeout=REQUEST_TIMEOUT_S, metadata=metadata)
                ids = [reply.id]
            else:
                reply = self.stub.CastVotes(
                    self.pb.CastVotesRequest(votes=messages), timeout=REQUEST_TIMEOUT_S, metadata=metadata
                )
                for result in reply.results:
                    if result.WhichOneof("outcome") == "accepted":
                        ids[result.index] = result.accepted.id
                if reply.accepted < len(votes):
                    exception = NotAccepted(_grpc_batch_problem(reply, len(votes)))
            length = reply.ByteSize()
        except grpc.RpcError as e:
            # Status and message only: Locust groups failures by their text.
            exception = GrpcError(f"{e.code().name}: {e.details()}")
        elapsed_ms = (time.perf_counter() - start) * 1000
        if exception is None and first_ids is not None:
            exception = _retry_problem(first_ids, ids)
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )
        return ids


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
    route = "http"

    def on_start(self):
        self._setup(self.environment.parsed_options)

    @task
    def vote(self):
        self._vote()

    def _send(self, votes, token=None, first_ids=None):
        single = self.batch_size == 1
        name = ("/votes" if single else "/votes (batch)") + (" (retry)" if first_ids is not None else "")
        ids = [None] * len(votes)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        body = votes[0] if single else votes
        with self.client.post("/votes", json=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return ids
            body = response.json()
            ids = [body["id"]] if single else body["ids"]
            if not single and body["accepted"] < len(votes):
                response.failure(_http_batch_problem(body, len(votes)))
            elif first_ids is not None and (problem := _retry_problem(first_ids, ids)):
                response.failure(str(problem))
        return ids


def _http_batch_problem(body, sent) -> str:
    detail = ""
    if body["rejected"]:
        first = body["rejected"][0]
        detail = f"; item {first['index']}: {first['field']} {first['problem']}"
    elif body["unavailable"]:
        first = body["unavailable"][0]
        detail = f"; item {first['index']}: {first['reason']}"
    return f"{len(body['rejected'])} rejected, {len(body['unavailable'])} unavailable of {sent}{detail}"
