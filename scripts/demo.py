"""The second half of scripts/demo, run in the Locust virtualenv once the
stack is up and the release build is done: starts `votestream all`, drives it
with Locust over gRPC and HTTP at once, prints the standings, Locust's
per-route figures and where to look, then keeps the pipeline running until
Ctrl-C (or stops it at once with --exit).

The ports are votestream's defaults; GRPC_ADDR, HTTP_ADDR, CONSUMER_HTTP_ADDR
and LOGS_ADDR move them, and every other votestream variable (VOTES_TOPIC,
REDIS_KEY_PREFIX, ...) passes through.
"""

# Locust's import patches the standard library for gevent: it comes first.
from locust import events  # isort: skip
from locust.argument_parser import get_parser  # isort: skip

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gevent
import gevent.event
from locust.env import Environment
from locust.stats import StatsEntry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "locust"))
import locustfile  # noqa: E402

PHASES = 6
READY_TIMEOUT_S = 120
COUNT_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
# votestream's settings for its listeners, with their defaults (src/config.rs).
LISTENERS = {
    "GRPC_ADDR": ("0.0.0.0:50051", "gRPC ingress"),
    "HTTP_ADDR": ("0.0.0.0:8080", "HTTP ingress"),
    "CONSUMER_HTTP_ADDR": ("0.0.0.0:9100", "consumer"),
    "LOGS_ADDR": ("0.0.0.0:8081", "logs app"),
}


def say(text: str = "") -> None:
    print(text, flush=True)


def phase(n: int, text: str) -> None:
    say(f"\n[demo] {n}/{PHASES} {text}")


class DemoError(Exception):
    """Something the person running the demo has to fix; printed without a traceback."""


class Pipeline:
    """`votestream all` as a child process in its own session, so Ctrl-C
    reaches this script only, which then stops it with SIGTERM by its PID."""

    def __init__(self, binary: Path, log_path: Path):
        self.listeners = {var: _address(var, default) for var, (default, _) in LISTENERS.items()}
        for var, (bind, _) in self.listeners.items():
            _check_free(var, bind)
        env = {k: v for k, v in os.environ.items() if k != "PORT"}  # PORT would move the logs app
        env.update({var: f"{host}:{port}" for var, ((host, port), _) in self.listeners.items()})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(binary), "all"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def url(self, var: str, path: str = "") -> str:
        return f"http://{self.listeners[var][1]}{path}"

    def grpc_target(self) -> str:
        return self.listeners["GRPC_ADDR"][1]

    def wait_ready(self, interrupted: gevent.event.Event) -> float:
        start = time.monotonic()
        for var in ("HTTP_ADDR", "CONSUMER_HTTP_ADDR", "LOGS_ADDR"):
            while not _ok(self.url(var, "/readyz")):
                self.check_alive()
                if time.monotonic() - start > READY_TIMEOUT_S:
                    raise DemoError(
                        f"the {LISTENERS[var][1]} was not ready within {READY_TIMEOUT_S} s\n{self.log_tail()}"
                    )
                if interrupted.wait(0.25):
                    raise KeyboardInterrupt
        return time.monotonic() - start

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(f"votestream exited with status {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text) + f"\n  (whole log: {self.log_path})"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        say(f"[demo] stopping votestream (SIGTERM to PID {self.process.pid}); it drains in-flight votes first")
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
            say(f"[demo] votestream stopped (exit status {code})")
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            say(f"[demo] votestream did not stop within {STOP_TIMEOUT_S} s; killed it")


def _address(var: str, default: str) -> tuple[tuple[str, int], str]:
    """(bind address, address to connect to) of one listener."""
    value = os.environ.get(var, default)
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    connect = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return (host, int(port)), f"{connect}:{port}"


def _check_free(var: str, bind: tuple[str, int]) -> None:
    host, port = bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As votestream does: connections of an earlier run in TIME_WAIT do not count, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise DemoError(
                f"port {port} ({var}, the {LISTENERS[var][1]}) is busy: {e.strerror}. Another votestream may be "
                f"running: stop it, or move this one, e.g. {var}={host}:{port + 10000} scripts/demo"
            ) from None


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class Load:
    """Locust as a library: GrpcUser and HttpUser, `users` of each, at once."""

    def __init__(self, pipeline: Pipeline, users: int, batch: int):
        total = 2 * users
        # The locustfile's own options (--grpc-target, ...) are in this parser too.
        options = get_parser(default_config_files=[]).parse_args(
            args=[
                "--headless", "--users", str(total), "--spawn-rate", str(total),
                "--host", pipeline.url("HTTP_ADDR"), "--grpc-target", pipeline.grpc_target(),
                "--batch-size", str(batch),
            ]
        )  # fmt: skip
        self.env = Environment(
            user_classes=[locustfile.GrpcUser, locustfile.HttpUser],
            events=events,
            host=options.host,
            parsed_options=options,
        )
        self.env.events.init.fire(environment=self.env, runner=None, web_ui=None)
        self.runner = self.env.create_local_runner()
        self.users = total

    def start(self) -> None:
        self.started = time.monotonic()
        self.runner.start(self.users, spawn_rate=self.users)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        self.runner.quit()  # each user finishes its request first (the locustfile's stop timeout)
        self.runner.greenlet.join()
        self.seconds = self.elapsed()

    def per_route(self) -> list[dict]:
        rows = []
        tally = locustfile.TALLY.snapshot()
        for route, label, request_type in (("grpc", "gRPC", "grpc"), ("http", "HTTP", "POST")):
            merged = StatsEntry(self.env.stats, label, request_type)
            for entry in self.env.stats.entries.values():
                if entry.method == request_type:
                    merged.extend(entry)
            rows.append(
                {
                    "route": label,
                    "requests": merged.num_requests,
                    "failures": merged.num_failures,
                    "avg": merged.avg_response_time,
                    "median": merged.median_response_time,
                    "p95": merged.get_response_time_percentile(0.95),
                    "rps": merged.num_requests / self.seconds,
                    "votes": tally[route]["accepted"],
                    "vps": tally[route]["accepted"] / self.seconds,
                }
            )
        return rows


class Progress:
    """One line, rewritten in place on a terminal, printed every few seconds otherwise."""

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            print(f"\r\033[K  {text}", end="\n" if final else "", flush=True)
        elif final or time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            say(f"  {text}")


def bar(fraction: float, width: int = 24) -> str:
    filled = int(round(min(1.0, fraction) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def counted(pipeline: Pipeline) -> int | None:
    try:
        return int(_json(pipeline.url("LOGS_ADDR", "/results"))["total"])
    except (OSError, ValueError, KeyError):
        return None


def consumer_lag(pipeline: Pipeline) -> int | None:
    """The consumer's lag (records not yet read, from its /metrics: the sum
    over its partitions; None before it has any)."""
    try:
        with urllib.request.urlopen(pipeline.url("CONSUMER_HTTP_ADDR", "/metrics"), timeout=2) as response:
            lags = [
                int(float(line.split()[-1]))
                for line in response.read().decode().splitlines()
                if line.startswith("votestream_consumer_lag{")
            ]
    except (OSError, ValueError):
        return None
    return sum(lags) if lags else None


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """Aligned columns: the first `left` ones to the left, numbers to the right."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append(
            "  "
            + "  ".join(
                c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def print_standings(results: dict, this_run: int, url: str) -> None:
    routes = results.get("by_route", {})
    split = " · ".join(f"{'gRPC' if r == 'grpc' else 'HTTP' if r == 'http' else r} {n:,}" for r, n in routes.items())
    total = results["total"]
    say(f"Standings ({url}): {total:,} votes counted ({this_run:,} in this run); {split}")
    say()
    bands = [
        [i, b["band"], f"{b['votes']:,}", f"{100 * b['votes'] / max(total, 1):.1f}%"]
        for i, b in enumerate(results["bands"], 1)
    ]
    say(table(["#", "Band", "Votes", "Share"], bands, left=2))
    say()
    albums = [
        [i, a["album"], f"{a['votes']:,}", "-" if a.get("avg_rank") is None else f"{a['avg_rank']:.2f}"]
        for i, a in enumerate(results["albums"], 1)
    ]
    say(table(["#", "Band / album", "Votes", "Avg rank"], albums, left=2))


def print_routes(rows: list[dict], users: int, batch: int, seconds: float) -> None:
    per = "1 vote per request" if batch == 1 else f"{batch} votes per request"
    who = f"{users} user{'' if users == 1 else 's'} each"
    say(f"Locust, per route ({who}, {seconds:.0f} s, {per}; times in ms):")
    say()
    say(
        table(
            ["Route", "Requests", "Failures", "Avg", "Median", "p95", "Req/s", "Votes accepted", "Votes/s"],
            [
                [
                    r["route"],
                    f"{r['requests']:,}",
                    f"{r['failures']:,}",
                    f"{r['avg']:.1f}",
                    f"{r['median']:.0f}",
                    f"{r['p95']:.0f}",
                    f"{r['rps']:,.1f}",
                    f"{r['votes']:,}",
                    f"{r['vps']:,.1f}",
                ]
                for r in rows
            ],
        )  # fmt: skip
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="see scripts/demo --help")
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--exit", action="store_true")
    parser.add_argument("--log", type=Path, default=ROOT / ".stack" / "demo" / "votestream.log")
    args = parser.parse_args()

    interrupted = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, interrupted.set)

    pipeline = None
    try:
        phase(4, f"starting votestream all ({args.binary}; log: {args.log})")
        pipeline = Pipeline(args.binary, args.log)
        say(f"  PID {pipeline.process.pid}; waiting until the ingress, the consumer and the logs app are ready")
        ready_in = pipeline.wait_ready(interrupted)
        say(f"  ready in {ready_in:.1f} s")
        before = counted(pipeline) or 0

        load = Load(pipeline, args.users, args.batch)
        phase(5, f"Locust: {args.users} gRPC users and {args.users} HTTP users for {args.duration} s, at once")
        progress = Progress()
        max_lag, max_behind, behind_at = 0, 0, 0.0
        load.start()
        while load.elapsed() < args.duration and not interrupted.is_set():
            pipeline.check_alive()
            now, sent, seen, lag = load.elapsed(), locustfile.TALLY.accepted(), counted(pipeline), consumer_lag(pipeline)
            seen_text = "?" if seen is None else f"{seen - before:,}"
            lag_text = "?" if lag is None else f"{lag:,}"
            max_lag = max(max_lag, lag or 0)
            if seen is not None and sent - (seen - before) > max_behind:
                max_behind, behind_at = sent - (seen - before), sent / max(now, 1e-3)
            progress.show(
                f"{bar(now / args.duration)} {now:4.0f}/{args.duration} s  votes accepted {sent:,}  "
                f"counted in Redis {seen_text}  consumer lag {lag_text}"
            )
            interrupted.wait(max(0.0, min(1.0, args.duration - load.elapsed())))
        load.stop()
        sent = locustfile.TALLY.accepted()
        progress.show(f"{bar(1)} {load.seconds:4.0f} s  votes accepted {sent:,}; Locust stopped", final=True)

        # The consumers count a little behind the ingress: wait for the last ones.
        deadline = time.monotonic() + COUNT_TIMEOUT_S
        while not interrupted.is_set():
            seen = (counted(pipeline) or before) - before
            progress.show(f"{bar(seen / max(sent, 1))} counted in Redis {seen:,} of {sent:,}", final=seen >= sent)
            if seen >= sent:
                break
            if time.monotonic() > deadline:
                progress.show(
                    f"counted {seen:,} of {sent:,} after {COUNT_TIMEOUT_S} s; showing what is there", final=True
                )
                break
            pipeline.check_alive()
            interrupted.wait(0.5)
        if interrupted.is_set():
            raise KeyboardInterrupt

        phase(6, "results")
        results = _json(pipeline.url("LOGS_ADDR", "/results"))
        say()
        trail = max_behind / behind_at if behind_at else 0.0
        say(
            f"Largest consumer lag seen: {max_lag:,} records; counting trailed acceptance by at most "
            f"{max_behind:,} votes (about {trail:.1f} s of traffic at the rate then)"
        )
        say()
        print_standings(results, results["total"] - before, pipeline.url("LOGS_ADDR", "/results"))
        say()
        print_routes(load.per_route(), args.users, args.batch, load.seconds)
        for error in sorted(load.env.stats.errors.values(), key=lambda e: -e.occurrences)[:5]:
            say(f"  failed {error.occurrences:,} times: {error.method} {error.name}: {error.error}")
        say()
        say("Where to look:")
        say(f"  logs page (live)     {pipeline.url('LOGS_ADDR', '/')}")
        say(f"  standings (JSON)     {pipeline.url('LOGS_ADDR', '/results')}")
        say(f"  ingress metrics      {pipeline.url('HTTP_ADDR', '/metrics')}")
        say(f"  consumer metrics     {pipeline.url('CONSUMER_HTTP_ADDR', '/metrics')}")
        say(f"  votestream log       {args.log}")
        say('  Grafana              see README.md, "Grafana" (grafana-provisioning/)')
        say()
        if not args.exit:
            say(f"[demo] the pipeline keeps running (votestream PID {pipeline.process.pid}); Ctrl-C stops it")
            while not interrupted.wait(1):
                pipeline.check_alive()
        return 0
    except DemoError as e:
        say(f"\n[demo] error: {e}")
        return 1
    except KeyboardInterrupt:
        say("\n[demo] interrupted")
        return 130
    finally:
        if pipeline is not None:
            pipeline.stop()


if __name__ == "__main__":
    sys.exit(main())
