"""The real tools behind the manifest checks, and where they come from.

- kustomize: `kubectl kustomize DIR` (kubectl embeds kustomize; no cluster is
  needed). Where kubectl is missing, a `kustomize` on PATH, else kustomize
  KUSTOMIZE_VERSION built once from its Go module with `go install` into the
  cache (about a minute).
- Strimzi's CRDs: Strimzi publishes no CRD package, but the test jar of its
  Java API, Maven artifact io.strimzi:api:VERSION:jar:tests, holds the CRDs
  its build generates with v1 as the only version (`crds/v1/*.yaml`, the same
  generator and model classes as the CRDs of its release). `mvn` fetches it
  once into the cache; its SHA-256 is pinned below.

The cache is the one scripts/stack uses: $STACK_CACHE, by default
~/.cache/votestream. Anything that cannot be had fails the tests with a
message saying what to install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZE_VERSION = "v5.5.0"  # the kustomize of kubectl 1.32
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# io.strimzi:api versions whose test jar holds crds/v1 (1.2.0's, the only 1.x
# on Maven Central, no longer does), with the SHA-256 of that jar.
STRIMZI_API_TEST_JARS = {
    "0.50.1": "ce55d893889b64bdf2513749eb520250e2afa69bcc464fb02da6a8bc111e6f57",
    "0.51.0": "b99f69303dc507ca505b74345d93f5260621bb084b8b79447f726e54b6e66a1d",
}
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class ToolMissing(RuntimeError):
    """A tool the checks need is not installed and cannot be fetched."""


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "votestream"
    return Path(os.environ.get("STACK_CACHE") or default)


# --- kustomize -------------------------------------------------------------------


@lru_cache(maxsize=None)
def kustomize_command() -> tuple[str, ...]:
    """The command that renders a kustomization folder given after it."""
    if shutil.which("kubectl"):
        return ("kubectl", "kustomize")
    if shutil.which("kustomize"):
        return ("kustomize", "build")
    binary = cache_dir() / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
    if not binary.is_file():
        if not shutil.which("go"):
            raise ToolMissing(
                "rendering deploy/k8s needs kubectl (`kubectl kustomize`), kustomize, "
                f"or Go to build kustomize {KUSTOMIZE_VERSION}: none is on PATH"
            )
        binary.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["go", "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(binary.parent)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode != 0 or not binary.is_file():
            raise ToolMissing(f"building kustomize {KUSTOMIZE_VERSION} with go failed:\n{out.stderr}")
    return (str(binary), "build")


def kustomize_build(directory: str | Path) -> list[dict[str, Any]]:
    """The resources `kustomize build DIRECTORY` prints, in its order."""
    cmd = [*kustomize_command(), str(directory)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --- Strimzi's CRDs --------------------------------------------------------------


def _strimzi_test_jar(version: str) -> Path:
    if version not in STRIMZI_API_TEST_JARS:
        raise ValueError(f"no pinned io.strimzi:api test jar for Strimzi {version}")
    folder = cache_dir() / f"strimzi-api-{version}"
    jar = folder / f"api-{version}-tests.jar"
    if not jar.is_file():
        if not shutil.which("mvn"):
            raise ToolMissing(
                f"Strimzi's CRDs come from io.strimzi:api:{version}:jar:tests on Maven Central: "
                "install Maven (mvn) and Java to fetch them"
            )
        out = subprocess.run(
            [
                "mvn", "-q", "-B", f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact=io.strimzi:api:{version}:jar:tests",
                f"-DoutputDirectory={folder}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        if out.returncode != 0 or not jar.is_file():
            raise ToolMissing(
                f"mvn could not fetch io.strimzi:api:{version}:jar:tests:\n{out.stdout}{out.stderr}"
            )
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    if digest != STRIMZI_API_TEST_JARS[version]:
        raise RuntimeError(f"{jar}: SHA-256 {digest}, expected {STRIMZI_API_TEST_JARS[version]}")
    return jar


@lru_cache(maxsize=None)
def strimzi_crds(version: str) -> dict[str, dict[str, Any]]:
    """Strimzi `version`'s CustomResourceDefinitions (kafka.strimzi.io/v1 only), by kind."""
    crds = {}
    with zipfile.ZipFile(_strimzi_test_jar(version)) as jar:
        for name in jar.namelist():
            if name.startswith("crds/v1/") and name.endswith(".yaml"):
                crd = yaml.load(jar.read(name), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                crds[crd["spec"]["names"]["kind"]] = crd
    if not crds:
        raise RuntimeError(f"io.strimzi:api:{version}:jar:tests holds no crds/v1/*.yaml")
    return crds
