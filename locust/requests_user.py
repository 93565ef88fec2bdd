"""The HTTP route through python-requests, Locust's plain `HttpUser` client,
beside the classes of locustfile.py (its options, `GrpcUser` and `HttpUser`,
which uses the faster geventhttpclient). It exists to show how much of a
gRPC-versus-HTTP comparison under Locust is the Python client's own cost
(BENCHMARKS.md, "Locust comparison"):

    locust -f locust/requests_user.py --headless -u 32 -r 32 -t 40s GrpcUser RequestsHttpUser
"""

import locust
from locust import constant

# Importing locustfile registers its options and listeners (once) and brings
# its user classes into this file, so they can be named on the command line.
from locustfile import GrpcUser, HttpUser, _Voter  # noqa: F401


class RequestsHttpUser(locust.HttpUser, _Voter):
    """Votes over HTTP like `HttpUser` (same task, same votes, same voters,
    retries and tally), but each request goes through python-requests."""

    host = HttpUser.host
    wait_time = constant(0)
    route = HttpUser.route
    on_start = HttpUser.on_start
    vote = HttpUser.vote
    _send = HttpUser._send
