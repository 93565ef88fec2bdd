"""Checks of what Prometheus scrapes (the Prometheus Operator's PodMonitors)
and of the rules it evaluates (PrometheusRule).

- `prometheus_operator_schema_errors(docs, version)`: every
  monitoring.coreos.com resource (PodMonitor, ServiceMonitor, PrometheusRule)
  against the Prometheus Operator's own CRDs (tools.py, crd_checks.py). Tests
  of alerting rules call it on the rendered manifests.
- `monitor_errors(docs)`: each PodMonitor selects pods that exist, on a port
  they all declare and, for votestream's containers, on the port and path
  that serve /metrics (the admin port); every votestream workload is scraped
  by one PodMonitor.
"""

from __future__ import annotations

from contract import SUBCOMMANDS
from crd_checks import schema_errors
from manifest_checks import (
    Doc,
    find,
    ident,
    is_project,
    label_selector_matches,
    pod_specs,
    template_labels,
    workloads,
)
from pod_checks import admin_port_of, subcommand

GROUP = "monitoring.coreos.com"


def prometheus_operator_schema_errors(docs: list[Doc], version: str) -> list[str]:
    """Every monitoring.coreos.com resource against the CRD of Prometheus
    Operator `version`, unknown fields rejected, and its metadata against
    Kubernetes' ObjectMeta."""
    return schema_errors(docs, GROUP, version)


def _selected(docs: list[Doc], monitor: Doc) -> list[Doc]:
    """The workloads whose pods a PodMonitor selects (by default, in its own namespace)."""
    sel = monitor["spec"].get("namespaceSelector", {})
    namespaces = set(sel.get("matchNames", [])) or {monitor["metadata"].get("namespace")}
    return [
        w
        for w in workloads(docs)
        if (sel.get("any") or w["metadata"].get("namespace") in namespaces)
        and label_selector_matches(monitor["spec"]["selector"], template_labels(w))
    ]


def monitor_errors(docs: list[Doc]) -> list[str]:
    errors = []
    scraped: dict[str, list[str]] = {}  # workload -> the PodMonitors scraping it
    for monitor in find(docs, "PodMonitor"):
        where = ident(monitor)
        selected = _selected(docs, monitor)
        if not selected:
            errors.append(f"{where}: selector {monitor['spec']['selector']} matches no workload's pods")
        for w in selected:
            scraped.setdefault(ident(w), []).append(where)
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            port = endpoint.get("port")
            if port is None:
                errors.append(f"{where}: an endpoint names no port (scrape the port by its name)")
                continue
            for w in selected:
                named = [
                    (c, p)
                    for spec in pod_specs(w)
                    for c in spec["containers"]
                    for p in c.get("ports", [])
                    if p.get("name") == port
                ]
                if not named:
                    errors.append(f"{where}: {ident(w)} declares no container port {port}")
                for c, p in named:
                    sub = subcommand(c)
                    if not is_project(c) or sub is None:
                        continue
                    if p["containerPort"] != admin_port_of(docs, c):
                        errors.append(
                            f"{where}: port {port} of {ident(w)} is {p['containerPort']}, "
                            f"but {sub} serves /metrics on {admin_port_of(docs, c)}"
                        )
                    path = endpoint.get("path", "/metrics")
                    if path != "/metrics" or path not in SUBCOMMANDS[sub]["paths"]:
                        errors.append(f"{where}: path {path}, but {sub} serves its metrics on /metrics")
    for w in workloads(docs):
        if any(is_project(c) for spec in pod_specs(w) for c in spec["containers"]):
            by = scraped.get(ident(w), [])
            if len(by) != 1:
                errors.append(
                    f"{ident(w)}: scraped by {len(by)} PodMonitors ({', '.join(by) or 'none'}), not one"
                )
    return errors
