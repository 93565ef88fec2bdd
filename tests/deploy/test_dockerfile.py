"""The Dockerfile, checked without a Docker engine: hadolint, then its
structure with Docker's own parser (the `dockerfile` package)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from contract import ROOT

DOCKERFILE = ROOT / "Dockerfile"
# What `cargo build` reads, which the build context must keep.
NEEDED = [
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "src/main.rs",
    "src/lib.rs",
    "proto/votes.proto",
    # A workspace member, and a path dependency of the benchmark's.
    "tests/harness/Cargo.toml",
    "tests/harness/src/lib.rs",
]


def commands():
    return dockerfile.parse_file(str(DOCKERFILE))


def stages():
    out = []
    for c in commands():
        if c.cmd == "FROM":
            out.append([])
        out[-1].append(c)
    return out


def one(stage, cmd):
    found = [c for c in stage if c.cmd == cmd]
    assert len(found) == 1, f"{len(found)} {cmd} in a stage"
    return found[0]


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (requirements.txt installs it)")
    out = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_builder_compiles_the_locked_release_binary_with_a_rust_that_knows_the_edition():
    build, _ = stages()
    image = one(build, "FROM").value[0]
    version = re.fullmatch(r"rust:(\d+)\.(\d+)\.(\d+)-bookworm", image)
    assert version, f"builder {image} is not an exact rust:X.Y.Z-bookworm"
    cargo = (ROOT / "Cargo.toml").read_text()
    if 'edition = "2024"' in cargo:
        assert (int(version[1]), int(version[2])) >= (1, 85), "edition 2024 needs Rust 1.85"
    required = re.search(r'^rust-version\s*=\s*"(\d+)\.(\d+)', cargo, re.M)
    if required:
        assert (int(version[1]), int(version[2])) >= (int(required[1]), int(required[2]))
    run = " ".join(" ".join(c.value) for c in build if c.cmd == "RUN")
    for flag in ("cargo build", "--release", "--locked", "--bin votestream"):
        assert flag in run
    values = one(build, "ENV").value
    env = dict(zip(values[::2], values[1::2], strict=True))
    assert env["LIBZ_SYS_STATIC"] == "1", "zlib linked statically: the runtime image has no libz"
    assert env["CARGO_PROFILE_RELEASE_STRIP"] in ("symbols", "true")


def test_the_runtime_image_is_small_non_root_and_runs_the_binary():
    build, runtime = stages()
    base = one(runtime, "FROM").value[0]
    # distroless cc: glibc and libgcc, matching the bookworm (Debian 12) builder.
    assert base.startswith("gcr.io/distroless/cc-debian12:nonroot"), base
    copy = one(runtime, "COPY")
    assert copy.flags == ("--from=" + one(build, "FROM").value[2],)
    binary = copy.value[-1]
    user = one(runtime, "USER").value[0]
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), "a numeric non-root user (runAsNonRoot checks it)"
    entrypoint = one(runtime, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == (binary,)
    assert not [c for c in runtime if c.cmd == "RUN"], "the runtime image has no shell to RUN with"


def test_the_build_context_keeps_the_sources_and_drops_the_rest():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path):
        return any(
            not p.startswith("!")
            and (fnmatch.fnmatch(path, p.lstrip("/")) or path.startswith(p.strip("/") + "/"))
            for p in patterns
        )

    for path in NEEDED:
        assert not ignored(path), f"{path} is left out of the build context"
    for path in (
        "target/release/votestream",
        ".git/HEAD",
        ".venv/bin/python",
        "deploy/k8s/base/kustomization.yaml",
    ):
        assert ignored(path), f"{path} is sent to the Docker daemon"
