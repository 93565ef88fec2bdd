"""Checks that Grafana gets this repository's provisioning: every file of
grafana-provisioning/ mounted where Grafana reads it, the dashboards provider
pointed at its mounted folder, the Redis data source at the redis Service,
and every data source URL, user and password taken from a variable the
container sets.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from manifest_checks import Doc, find, pod_specs


def grafana_errors(docs: list[Doc], provisioning: Path) -> list[str]:
    """Every provisioning file is in a ConfigMap, mounted where Grafana reads it;
    the dashboards provider reads the folder its dashboards are mounted in; the
    Redis data source reaches the Redis Service."""
    errors = []
    grafana = find(docs, "Deployment", "grafana")
    if not grafana:
        return ["no Deployment grafana"]
    spec = pod_specs(grafana[0])[0]
    container = next(c for c in spec["containers"] if c["name"] == "grafana")
    mounts = {}  # ConfigMap name -> mount path
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if "configMap" in volumes.get(m["name"], {}):
            mounts[volumes[m["name"]]["configMap"]["name"]] = m["mountPath"]
    mounted_files = {}  # file name -> mount path
    for cm_name, path in mounts.items():
        for cm in find(docs, "ConfigMap", cm_name):
            for key in cm.get("data", {}):
                mounted_files[key] = path

    for kind in ("datasources", "dashboards"):
        for f in sorted((provisioning / kind).glob("*")):
            if f.suffix not in (".yaml", ".yml", ".json"):
                continue
            if mounted_files.get(f.name) != f"/etc/grafana/provisioning/{kind}":
                errors.append(
                    f"grafana-provisioning/{kind}/{f.name} is not mounted in /etc/grafana/provisioning/{kind}"
                )

    # name -> literal value (None when it comes from a Secret or ConfigMap)
    env = {v["name"]: v.get("value") for v in container.get("env", [])}
    for f in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (yaml.safe_load(f.read_text()) or {}).get("providers", []):
            path = provider.get("options", {}).get("path")
            dashboards = [k for k, p in mounted_files.items() if k.endswith(".json")]
            if any(mounted_files[k] != path for k in dashboards):
                errors.append(
                    f"{f.name}: provider {provider.get('name')} reads {path}, dashboards are mounted elsewhere"
                )
    redis_ok = re.compile(r"(redis://)?redis(\.votestream(\.svc(\.cluster\.local)?)?)?:6379/?")
    for f in sorted((provisioning / "datasources").glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            # Every variable a data source names (its user, a password) is one Grafana has.
            for value in _strings(ds):
                for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value):
                    if var not in env:
                        errors.append(f"{f.name}: data source {ds.get('name')} reads ${var}, which Grafana's container lacks")
            url = str(ds.get("url", ""))
            var = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", url)
            if var:
                if var.group(1) not in env:
                    errors.append(f"{f.name}: data source url {url}: the Grafana container has no {var.group(1)}")
                elif ds.get("type") == "prometheus" and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", env[var.group(1)]):
                    errors.append(f"{f.name}: {var.group(1)}={env[var.group(1)]!r} is no Prometheus URL")
            elif ds.get("type") == "redis-datasource" and not redis_ok.fullmatch(url):
                errors.append(f"{f.name}: data source url {url} does not reach the redis Service")
    return errors


def _strings(node) -> list[str]:
    """Every string inside a YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []
