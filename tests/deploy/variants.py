"""The rendered kustomizations and the Kubernetes versions the manifests are
validated against. A module of its own, not conftest.py, so that test
modules can import it while another test folder has a conftest.py too."""

from __future__ import annotations

import kubernetes_validate

from contract import ROOT
from kustomize_lite import render

K8S = ROOT / "deploy" / "k8s"
# The base and every overlay.
VARIANTS = ["base"] + sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes the manifests support (lifecycle.preStop.sleep is on by
# default from 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

_rendered: dict[str, list] = {}


def rendered(variant: str) -> list[dict]:
    """A fresh copy of the resources of deploy/k8s/<variant>."""
    import copy

    if variant not in _rendered:
        _rendered[variant] = render(K8S / variant)
    return copy.deepcopy(_rendered[variant])
