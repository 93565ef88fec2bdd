"""What the votestream binary serves and reads, as the deployment sees it.

The ports and paths are the contract in the design document (processes, ports,
endpoints); the environment variables are read from src/config.rs, so a
manifest that sets a variable the binary does not know fails.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The one project image; kustomize `images:` sets its tag.
PROJECT_IMAGE = "ghcr.io/votestream/votestream"
NAMESPACE = "votestream"
PART_OF = {"app.kubernetes.io/part-of": "votestream"}

# Per subcommand: the HTTP listener (its address variable and default port),
# the paths it serves, and the gRPC listener where there is one; whether that
# listener is public (the consumer's serves only /healthz, /readyz and
# /metrics: it is its admin port); and the variable that moves /healthz,
# /readyz and /metrics to an admin port of their own (ADMIN_ADDR: unset, they
# stay on the HTTP listener).
SUBCOMMANDS = {
    "ingress": {
        "http_env": "HTTP_ADDR",
        "http_port": 8080,
        "paths": {"/healthz", "/readyz", "/metrics", "/votes"},
        "grpc_env": "GRPC_ADDR",
        "grpc_port": 50051,
        "public": True,
        "admin_env": "ADMIN_ADDR",
    },
    "consumer": {
        "http_env": "CONSUMER_HTTP_ADDR",
        "http_port": 9100,
        "paths": {"/healthz", "/readyz", "/metrics"},
        "public": False,
    },
    "logs": {
        "http_env": "LOGS_ADDR",
        "http_port": 8081,
        "paths": {"/", "/logs", "/logs/stream", "/results", "/healthz", "/readyz", "/metrics"},
        "public": True,
        "admin_env": "ADMIN_ADDR",
    },
}
PROBE_PATHS = {"/healthz", "/readyz"}
ADMIN_PATHS = {"/healthz", "/readyz", "/metrics"}

# Read by the binary besides its flags: the log filter, and Cloud Run's port
# (which wins over LOGS_ADDR's port in the logs app).
EXTRA_ENV = {"RUST_LOG", "PORT"}
def binary_env_names() -> set[str]:
    """Every environment variable a flag of the binary reads (src/config.rs)."""
    text = (ROOT / "src" / "config.rs").read_text()
    names = set(re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', text))
    if not names:
        raise AssertionError('no `env = "..."` found in src/config.rs: has the CLI moved?')
    return names | EXTRA_ENV


def grpc_services() -> list[str]:
    """The fully qualified gRPC services of proto/votes.proto (e.g. votes.v1.VoteService)."""
    text = (ROOT / "proto" / "votes.proto").read_text()
    package = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M).group(1)
    return [f"{package}.{name}" for name in re.findall(r"^\s*service\s+(\w+)", text, re.M)]


def consumer_offset_reset() -> str:
    """Where the consumer starts a partition its group never committed
    (`auto.offset.reset` in src/consumer/reader/clients.rs)."""
    text = (ROOT / "src" / "consumer" / "reader" / "clients.rs").read_text()
    m = re.search(r'\.set\("auto\.offset\.reset",\s*"(\w+)"\)', text)
    if not m:
        raise AssertionError("no auto.offset.reset in src/consumer/reader/clients.rs: has the reader moved?")
    return m.group(1)
