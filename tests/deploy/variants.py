"""The rendered kustomizations and the Kubernetes, Strimzi, KEDA and
Prometheus Operator versions the manifests are validated against. A module of
its own, not conftest.py, so that test modules can import it while another
test folder has a conftest.py too."""

from __future__ import annotations

import copy

import kubernetes_validate

from contract import ROOT
from tools import KEDA_FILES, PROMETHEUS_OPERATOR_FILES, STRIMZI_API_TEST_JARS, kustomize_build

K8S = ROOT / "deploy" / "k8s"
# The base and every overlay.
VARIANTS = ["base"] + sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes the manifests support (lifecycle.preStop.sleep is on by
# default from 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Strimzi's CRDs: of the first release line that runs Kafka 4.1.1 (0.50, at
# its last patch) and of the newest release whose io.strimzi:api test jar
# ships them (tools.py).
STRIMZI_VERSIONS = sorted(STRIMZI_API_TEST_JARS, key=lambda v: tuple(int(x) for x in v.split(".")))
# KEDA's CRDs: of the oldest release tested on the oldest Kubernetes above
# (2.15: 1.28 to 1.30) and of the newest its Go module is served at (tools.py).
KEDA_VERSIONS = sorted(KEDA_FILES, key=lambda v: tuple(int(x) for x in v[1:].split(".")))
# The Prometheus Operator's CRDs: the one version served (tools.py).
PROMETHEUS_OPERATOR_VERSIONS = sorted(PROMETHEUS_OPERATOR_FILES)

_rendered: dict[str, list] = {}


def rendered(variant: str) -> list[dict]:
    """A fresh copy of the resources `kubectl kustomize deploy/k8s/<variant>` prints."""
    if variant not in _rendered:
        _rendered[variant] = kustomize_build(K8S / variant)
    return copy.deepcopy(_rendered[variant])
