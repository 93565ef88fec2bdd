"""Custom resources against the CustomResourceDefinitions of the operators
that own them, as the API server checks them: the `openAPIV3Schema` of the
served version, with unknown fields rejected as `kubectl apply` does, and the
metadata against Kubernetes' ObjectMeta. The CEL rules
(`x-kubernetes-validations`) are not evaluated.

Where each operator's CRDs come from, and at which versions, is in tools.py;
`schema_errors(docs, group, version)` checks the resources of one API group
against one version of its operator.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any, Callable

import jsonschema

from manifest_checks import Doc, ident, k8s_definition_errors
from tools import keda_crds, prometheus_operator_crds, strimzi_crds
from variants import K8S_VERSIONS

# API group -> (the operator's name, its CRDs of a version by kind).
CRD_SOURCES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "kafka.strimzi.io": ("Strimzi", strimzi_crds),
    "keda.sh": ("KEDA", keda_crds),
    "monitoring.coreos.com": ("Prometheus Operator", prometheus_operator_crds),
}
# Kubernetes object names (DNS-1123 subdomain), which the API server enforces.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema that rejects unknown fields: `kubectl apply` validates strictly
    (fieldValidation=Strict), so a field the schema lacks is an error unless a
    node keeps unknown fields (x-kubernetes-preserve-unknown-fields)."""
    s = dict(schema)
    if (
        s.get("type") == "object"
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
    ):
        s["additionalProperties"] = False
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(s.get(key), dict):
            s[key] = _strict(s[key])
    return s


@lru_cache(maxsize=None)
def _validator(group: str, version: str, kind: str, api_version: str) -> Any:
    """The validator of `kind` in `group`/`api_version` by the operator's CRDs of
    `version`, or a string saying why there is none."""
    operator, crds = CRD_SOURCES[group]
    crd = crds(version).get(kind)
    if crd is None or crd["spec"]["group"] != group:
        return f"no {kind} CRD among those of {operator} {version} that tools.py takes"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if api_version not in served:
        return f"{operator} serves no {kind} in {group}/{api_version}"
    schema = copy.deepcopy(served[api_version]["schema"]["openAPIV3Schema"])
    # The API server checks metadata itself (ObjectMeta: see schema_errors).
    schema["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    # OpenAPI 3.0 schemas are JSON Schema draft 4 with extensions.
    return jsonschema.Draft4Validator(_strict(schema))


def schema_errors(docs: list[Doc], group: str, version: str) -> list[str]:
    """Every resource of API `group` against the CRD of its operator's `version`
    (unknown fields rejected), and its metadata against Kubernetes' ObjectMeta."""
    operator, _ = CRD_SOURCES[group]
    errors = []
    for doc in docs:
        doc_group, _, api_version = doc.get("apiVersion", "").partition("/")
        if doc_group != group:
            continue
        where = f"{ident(doc)} ({operator} {version})"
        validator = _validator(group, version, doc.get("kind"), api_version)
        if isinstance(validator, str):
            errors.append(f"{where}: {validator}")
            continue
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            errors.append(f"{where}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}")
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not DNS_SUBDOMAIN.fullmatch(str(meta.get("name", ""))):
            errors.append(f"{where}: metadata.name is not a DNS-1123 subdomain")
        elif len(meta["name"]) > 253:
            errors.append(f"{where}: metadata.name is longer than 253 characters")
        else:
            errors += k8s_definition_errors(
                meta, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", K8S_VERSIONS[0], f"{where}: metadata"
            )
    return errors
