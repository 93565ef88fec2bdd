"""Renders a kustomization the way `kustomize build` does, for the subset of
kustomize this repository uses, so the manifest tests need no kustomize binary.

Supported: `resources` (files and kustomization folders), `namespace`,
`configMapGenerator` and `secretGenerator` (`files`, `literals`, `envs`, with
kustomize's name-suffix hash and the rewriting of references to the generated
names), `images`, and `patches` holding JSON 6902 operations with a
`target` of `kind` and/or `name` (regular expressions). Any other field, or
any other form of these, raises `Unsupported`: a manifest change that needs
more of kustomize must extend this module (and test_renderer.py compares the
output with the real kustomize wherever `kustomize` or `kubectl` is on PATH).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "images",
    "patches",
}
GENERATOR_FIELDS = {"name", "files", "literals", "envs", "type"}
# Kinds without a namespace (the ones a manifest here could plausibly use).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
WORKLOADS_WITH_TEMPLATE = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


def render(directory: str | Path) -> list[dict[str, Any]]:
    """Returns the resources `kustomize build <directory>` would print."""
    resources, renames = _build(Path(directory).resolve())
    for res in resources:
        _rename_references(res, renames)
    return resources


def _build(root: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    kfile = next((root / n for n in KUSTOMIZATION_FILES if (root / n).is_file()), None)
    if kfile is None:
        raise FileNotFoundError(f"no kustomization in {root}")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{kfile}: fields {sorted(unknown)}")

    resources: list[dict[str, Any]] = []
    # (kind, original name) -> generated name with its hash suffix
    renames: dict[tuple[str, str], str] = {}
    for entry in k.get("resources", []):
        path = (root / entry).resolve()
        if path.is_dir():
            sub, sub_renames = _build(path)
            resources += sub
            renames.update(sub_renames)
        else:
            _inside(root, path)
            resources += [d for d in yaml.safe_load_all(path.read_text()) if d]

    for gen in k.get("configMapGenerator", []):
        res = _generate("ConfigMap", gen, root)
        renames[("ConfigMap", gen["name"])] = res["metadata"]["name"]
        resources.append(res)
    for gen in k.get("secretGenerator", []):
        res = _generate("Secret", gen, root)
        renames[("Secret", gen["name"])] = res["metadata"]["name"]
        resources.append(res)

    for patch in k.get("patches", []):
        _apply_patch(resources, patch)
    if "namespace" in k:
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_image(resources, image)
    return resources, renames


def _inside(root: Path, path: Path) -> None:
    # kustomize's default load restrictor: files only within the kustomization root.
    if root != path and root not in path.parents:
        raise Unsupported(f"{path} is outside the kustomization root {root}")


def _generate(kind: str, gen: dict[str, Any], root: Path) -> dict[str, Any]:
    unknown = set(gen) - GENERATOR_FIELDS
    if unknown:
        raise Unsupported(f"{kind} generator {gen.get('name')}: fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for spec in gen.get("files", []):
        key, _, rel = spec.partition("=") if "=" in spec else ("", "", spec)
        path = (root / rel).resolve()
        _inside(root, path)
        data[key or path.name] = path.read_text()
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for rel in gen.get("envs", []):
        path = (root / rel).resolve()
        _inside(root, path)
        data.update(parse_env_file(path.read_text()))

    name = gen["name"]
    if kind == "ConfigMap":
        res = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        encoded = {"kind": "ConfigMap", "name": "", "data": data}
    else:
        b64 = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        stype = gen.get("type", "Opaque")
        res = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": stype,
            "data": b64,
        }
        encoded = {"kind": "Secret", "name": "", "type": stype, "data": b64}
    res["metadata"]["name"] = f"{name}-{_hash(encoded)}"
    return res


def parse_env_file(text: str) -> dict[str, str]:
    """kustomize's env files: KEY=VALUE lines; blank lines and # comments skipped."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            # kustomize would read KEY from its own environment: never wanted here.
            raise Unsupported(f"env file line {number} has no '=': {line!r}")
        key, _, value = line.partition("=")
        out[key] = value
    return out


def _hash(obj: dict[str, Any]) -> str:
    # kustomize (api/hasher): sha256 of Go's json.Marshal of kind, data (and type)
    # with keys sorted and HTML characters escaped; its lookup of "metadata/name"
    # finds nothing, so the name is hashed as "". The suffix is the first 10 hex
    # digits with some characters swapped so that no word is spelled.
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_patch(resources: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    if set(patch) != {"target", "patch"}:
        raise Unsupported(f"patch with fields {sorted(patch)} (only target + inline patch)")
    target = patch["target"]
    if not set(target) <= {"kind", "name"}:
        raise Unsupported(f"patch target fields {sorted(target)} (only kind and name)")
    ops = yaml.safe_load(patch["patch"])
    if not isinstance(ops, list):
        raise Unsupported("only JSON 6902 patches (a list of operations)")
    matched = [
        r
        for r in resources
        if all(re.fullmatch(target[f], _field(r, f)) for f in ("kind", "name") if f in target)
    ]
    if not matched:
        raise ValueError(f"patch target {target} matches no resource")
    for res in matched:
        for op in ops:
            _json_patch(res, op)


def _field(res: dict[str, Any], field: str) -> str:
    return res["kind"] if field == "kind" else res["metadata"]["name"]


def _json_patch(doc: dict[str, Any], op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
        else:
            raise Unsupported(f"JSON patch op {kind}")
    else:
        if kind in ("replace", "remove") and last not in parent:
            raise ValueError(f"JSON patch {kind} of missing path {op['path']}")
        if kind in ("add", "replace"):
            parent[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[last]
        else:
            raise Unsupported(f"JSON patch op {kind}")


def pod_specs(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a resource (a workload's template, a Pod, a CronJob's job)."""
    kind = res.get("kind")
    spec = res.get("spec") or {}
    if kind in WORKLOADS_WITH_TEMPLATE:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [spec]
    return []


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("initContainers", [])) + list(pod_spec.get("containers", []))


def _set_image(resources: list[dict[str, Any]], image: dict[str, Any]) -> None:
    if not set(image) <= {"name", "newName", "newTag", "digest"}:
        raise Unsupported(f"images entry fields {sorted(image)}")
    for res in resources:
        for spec in pod_specs(res):
            for c in containers(spec):
                name = re.split(r"[@]|:(?=[^/]*$)", c["image"], maxsplit=1)[0]
                if name != image["name"]:
                    continue
                new = image.get("newName", name)
                if "digest" in image:
                    c["image"] = f"{new}@{image['digest']}"
                elif "newTag" in image:
                    c["image"] = f"{new}:{image['newTag']}"
                else:
                    c["image"] = new + c["image"][len(name) :]


def _rename_references(res: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def renamed(kind: str, name: str) -> str:
        return renames.get((kind, name), name)

    for spec in pod_specs(res):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = renamed("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                secret = volume["secret"]
                secret["secretName"] = renamed("Secret", secret["secretName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    source["configMap"]["name"] = renamed("ConfigMap", source["configMap"]["name"])
                if "secret" in source:
                    source["secret"]["name"] = renamed("Secret", source["secret"]["name"])
        for pull in spec.get("imagePullSecrets", []):
            pull["name"] = renamed("Secret", pull["name"])
        for c in containers(spec):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    ref["configMapKeyRef"]["name"] = renamed("ConfigMap", ref["configMapKeyRef"]["name"])
                if "secretKeyRef" in ref:
                    ref["secretKeyRef"]["name"] = renamed("Secret", ref["secretKeyRef"]["name"])
            for env_from in c.get("envFrom", []):
                if "configMapRef" in env_from:
                    env_from["configMapRef"]["name"] = renamed("ConfigMap", env_from["configMapRef"]["name"])
                if "secretRef" in env_from:
                    env_from["secretRef"]["name"] = renamed("Secret", env_from["secretRef"]["name"])
