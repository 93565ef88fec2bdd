"""Checks of a Cloud Run service manifest (Knative serving.knative.dev/v1
Service, as `gcloud run services replace` takes it) for the logs web app.

No schema of the Knative Service ships offline, so the envelope is checked
field by field here; the revision template's pod spec (containers, env,
probes, resources) is validated strictly against Kubernetes' PodSpec schema,
after removing the fields Knative adds to it.
"""

from __future__ import annotations

import re
from typing import Any

from contract import PROBE_PATHS, SUBCOMMANDS, binary_env_names
from manifest_checks import k8s_definition_errors, split_image

CONTAINER_PORT = 80
# Knative's RevisionSpec = a PodSpec subset plus these.
KNATIVE_REVISION_FIELDS = {
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
}
# Names Cloud Run sets itself and refuses in a manifest.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
# The settings that hold credentials, which must come from Secret Manager.
SECRET_ENV = {"MONGODB_URI", "REDIS_URL"}


def cloudrun_errors(doc: dict[str, Any], k8s_version: str) -> list[str]:
    errors = []
    if doc.get("apiVersion") != "serving.knative.dev/v1" or doc.get("kind") != "Service":
        return [
            f"apiVersion/kind is {doc.get('apiVersion')}/{doc.get('kind')}, not serving.knative.dev/v1 Service"
        ]
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        errors.append(f"unknown top-level fields {sorted(extra)}")
    meta = doc.get("metadata", {})
    errors += _unknown("metadata", meta, {"name", "namespace", "labels", "annotations"})
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?", str(meta.get("name", ""))):
        errors.append(
            f"metadata.name {meta.get('name')!r}: Cloud Run wants lowercase letters, digits and dashes, at most 49"
        )
    errors += _string_maps("metadata", meta)

    spec = doc.get("spec", {})
    errors += _unknown("spec", spec, {"template", "traffic"})
    template = spec.get("template")
    if not isinstance(template, dict):
        return errors + ["spec.template is missing"]
    errors += _unknown("spec.template", template, {"metadata", "spec"})
    errors += _unknown(
        "spec.template.metadata", template.get("metadata", {}), {"name", "labels", "annotations"}
    )
    errors += _string_maps("spec.template.metadata", template.get("metadata", {}))

    revision = dict(template.get("spec", {}))
    for field in KNATIVE_REVISION_FIELDS & set(revision):
        if not isinstance(revision.pop(field), int):
            errors.append(f"spec.template.spec.{field} is not an integer")
    # Cloud Run lets containers go unnamed; a Kubernetes PodSpec does not.
    revision["containers"] = [{"name": "unnamed", **c} for c in revision.get("containers", [])]
    errors += k8s_definition_errors(revision, "io.k8s.api.core.v1.PodSpec", k8s_version, "spec.template.spec")

    serving = [c for c in revision.get("containers", []) if c.get("ports")]
    if len(serving) != 1:
        return errors + [
            f"{len(serving)} containers declare ports; Cloud Run needs exactly one ingress container"
        ]
    c = serving[0]
    where = f"container {c.get('name', '(unnamed)')}"
    ports = c["ports"]
    if len(ports) != 1 or ports[0].get("containerPort") != CONTAINER_PORT:
        errors.append(f"{where}: ports {ports}, expected one containerPort {CONTAINER_PORT}")
    if ports and ports[0].get("name", "http1") not in ("http1", "h2c"):
        errors.append(f"{where}: port name {ports[0].get('name')} is neither http1 nor h2c")
    # Cloud Run pulls from Artifact Registry (or through a remote repository
    # there), so the project image keeps its name, votestream, not its registry.
    if split_image(str(c.get("image", "")))[0].rsplit("/", 1)[-1] != "votestream":
        errors.append(f"{where}: image {c.get('image')} is not the project image (…/votestream:<tag>)")
    errors += _image_errors(where, str(c.get("image", "")))
    args = c.get("args", [])
    if not args or args[0] != "logs":
        errors.append(f"{where}: args {args} do not start with the logs subcommand")

    known = binary_env_names() - RESERVED_ENV
    sources = {}
    for var in c.get("env", []):
        name = var.get("name")
        if name in RESERVED_ENV:
            errors.append(f"{where}: env {name} is reserved by Cloud Run")
        elif name not in known:
            errors.append(f"{where}: the binary reads no variable {name}")
        if ("value" in var) == ("valueFrom" in var):
            errors.append(f"{where}: env {name} needs exactly one of value and valueFrom")
        ref = var.get("valueFrom", {})
        if ref:
            errors += _unknown(f"{where}: env {name}: valueFrom", ref, {"secretKeyRef"})
            secret = ref.get("secretKeyRef", {})
            errors += _unknown(f"{where}: env {name}: secretKeyRef", secret, {"name", "key"})
            # name: a Secret Manager secret; key: its version, a number or "latest".
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", str(secret.get("name", ""))):
                errors.append(
                    f"{where}: env {name}: secretKeyRef.name {secret.get('name')!r} is no secret name"
                )
            if not re.fullmatch(r"latest|[1-9][0-9]*", str(secret.get("key", ""))):
                errors.append(
                    f"{where}: env {name}: secretKeyRef.key {secret.get('key')!r} is neither a version number nor latest"
                )
        sources[name] = "secret" if ref else "value"
    for name in SECRET_ENV:
        if sources.get(name) != "secret":
            errors.append(f"{where}: {name} must come from a secret (secretKeyRef)")

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet")
        if get:
            if get.get("path") not in SUBCOMMANDS["logs"]["paths"] & PROBE_PATHS:
                errors.append(f"{where}: {probe} path {get.get('path')} is not served by logs")
            if get.get("port", CONTAINER_PORT) != CONTAINER_PORT:
                errors.append(f"{where}: {probe} port {get.get('port')} is not the container port")
    return errors


def _image_errors(where: str, image: str) -> list[str]:
    repo, tag, digest = split_image(image)
    if not (digest or (tag and tag != "latest")):
        return [f"{where}: image {image} has no pinned tag"]
    return []


def _unknown(where: str, obj: Any, allowed: set[str]) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} is not a mapping"]
    extra = set(obj) - allowed
    return [f"{where}: unknown fields {sorted(extra)}"] if extra else []


def _string_maps(where: str, meta: dict[str, Any]) -> list[str]:
    errors = []
    for field in ("labels", "annotations"):
        values = meta.get(field, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            errors.append(f"{where}.{field}: values must be strings")
    return errors
