"""Checks of the pods: hardening, probes, resources, pinned images and graceful
termination for every container; for the project's own containers, agreement
with what the votestream binary serves and reads.
"""

from __future__ import annotations

import re

from contract import PROBE_PATHS, PROJECT_IMAGE, SUBCOMMANDS, binary_env_names
from manifest_checks import (
    Doc,
    container_env,
    containers,
    find,
    ident,
    is_project,
    pod_specs,
    split_image,
    workloads,
)


def pod_hygiene_errors(docs: list[Doc]) -> list[str]:
    """Probes, resources, non-root and read-only root filesystem, pinned images,
    graceful termination."""
    errors = []
    for w in workloads(docs):
        for spec in pod_specs(w):
            pod_sc = spec.get("securityContext", {})
            for c in containers(spec):
                where = f"{ident(w)}: container {c['name']}"
                init = c in spec.get("initContainers", [])
                sc = c.get("securityContext", {})
                if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                    errors.append(f"{where}: runAsNonRoot is not set")
                if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                    errors.append(f"{where}: runs as user 0")
                if sc.get("allowPrivilegeEscalation") is not False:
                    errors.append(f"{where}: allowPrivilegeEscalation is not false")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    errors.append(f"{where}: capabilities are not all dropped")
                if sc.get("readOnlyRootFilesystem") is not True:
                    errors.append(f"{where}: root filesystem is writable")
                seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
                if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                    errors.append(f"{where}: no seccomp profile")
                resources = c.get("resources", {})
                for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                    for key in keys:
                        if key not in resources.get(part, {}):
                            errors.append(f"{where}: no {part}.{key}")
                if not init:
                    for probe in ("readinessProbe", "livenessProbe"):
                        if probe not in c:
                            errors.append(f"{where}: no {probe}")
                    names = {p.get("name") for p in c.get("ports", [])} | {
                        p["containerPort"] for p in c.get("ports", [])
                    }
                    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                        action = c.get(probe, {})
                        port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                        if port is not None and port not in names:
                            errors.append(f"{where}: {probe} port {port} is no container port")
                errors += _image_errors(where, c["image"])
            if any(is_project(c) for c in containers(spec)):
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if not 30 <= grace <= 60:
                    errors.append(
                        f"{ident(w)}: terminationGracePeriodSeconds {grace} outside 30..60 (SIGTERM drain)"
                    )
                for c in spec["containers"]:
                    pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                    if pause >= grace / 2:
                        errors.append(
                            f"{ident(w)}: preStop pause {pause}s leaves too little of the {grace}s grace to drain"
                        )
    return errors


def _image_errors(where: str, image: str) -> list[str]:
    repo, tag, digest = split_image(image)
    if repo == PROJECT_IMAGE:
        if not (digest or (tag and tag != "latest")):
            return [f"{where}: project image {image} has no pinned tag"]
        return []
    if "votestream" in repo:
        return [f"{where}: {image} is not the project image {PROJECT_IMAGE}"]
    # Upstream images: an exact version tag (or a digest), never a moving one.
    if digest:
        return []
    if not tag or tag == "latest" or not re.fullmatch(r"v?\d+\.\d+\.\d+([-.][\w.-]+)?", tag):
        return [f"{where}: upstream image {image} is not pinned to an exact version tag"]
    return []


def votestream_container_errors(docs: list[Doc]) -> list[str]:
    """The project's containers: a known subcommand, variables the binary reads,
    /healthz, /readyz and /metrics on an admin port apart from the public one
    (ADMIN_ADDR for the ingress and the logs app), probes on that port and on
    paths it serves, and the public ports declared that the container serves."""
    errors = []
    known = binary_env_names()
    for w in workloads(docs):
        for spec in pod_specs(w):
            if any(is_project(c) for c in containers(spec)):
                if spec.get("enableServiceLinks") is not False:
                    # Service links add variables such as REDIS_PORT=tcp://...
                    errors.append(f"{ident(w)}: enableServiceLinks is not false")
            for c in containers(spec):
                if not is_project(c):
                    continue
                where = f"{ident(w)}: container {c['name']}"
                sub = subcommand(c)
                if sub is None:
                    args = c.get("command", [])[1:] + c.get("args", [])
                    errors.append(f"{where}: runs {args}, not one of the subcommands {sorted(SUBCOMMANDS)}")
                    continue
                errors += env_errors(where, c, known, docs)
                env = container_env(docs, c)
                served = SUBCOMMANDS[sub]
                http_port = http_port_of(docs, c)
                admin_port = admin_port_of(docs, c)
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                if "admin_env" in served and served["admin_env"] not in env:
                    errors.append(
                        f"{where}: no {served['admin_env']}: /metrics and the probes would share the public port"
                    )
                if admin_port not in ports.values():
                    errors.append(f"{where}: the {sub} admin port {admin_port} is not a container port")
                serves_http = sub != "ingress" or env.get("NO_HTTP_VOTES", "false") != "true"
                if serves_http and served["public"] and http_port not in ports.values():
                    errors.append(f"{where}: the {sub} HTTP port {http_port} is not a container port")
                if not serves_http and http_port in ports.values() and http_port != admin_port:
                    errors.append(f"{where}: NO_HTTP_VOTES is set but the HTTP port {http_port} is declared")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if probe not in c:
                        continue
                    get = c[probe].get("httpGet")
                    if not get:
                        errors.append(f"{where}: {probe} is not an HTTP probe of /healthz or /readyz")
                        continue
                    port = ports.get(get["port"], get["port"])
                    if port != admin_port:
                        errors.append(
                            f"{where}: {probe} on port {get['port']}, but {sub} serves its probes on {admin_port}"
                        )
                    if get.get("path") not in served["paths"] & PROBE_PATHS:
                        errors.append(f"{where}: {probe} path {get.get('path')} is not served by {sub}")
                if sub == "ingress":
                    grpc = env.get("NO_GRPC", "false") != "true"
                    if (
                        grpc
                        and _port_of(env.get(served["grpc_env"]), served["grpc_port"]) not in ports.values()
                    ):
                        errors.append(f"{where}: serves gRPC but its port is not a container port")
                    if not grpc and served["grpc_port"] in ports.values():
                        errors.append(f"{where}: NO_GRPC is set but the gRPC port is declared")
    return errors


def subcommand(c: Doc) -> str | None:
    """The votestream subcommand a project container runs, if it is a known one."""
    args = c.get("command", [])[1:] + c.get("args", [])
    return args[0] if args and args[0] in SUBCOMMANDS else None


def http_port_of(docs: list[Doc], c: Doc) -> int | None:
    """The port of a project container's HTTP listener (its subcommand's
    default, or the one its address variable sets)."""
    sub = subcommand(c)
    if sub is None:
        return None
    served = SUBCOMMANDS[sub]
    return _port_of(container_env(docs, c).get(served["http_env"]), served["http_port"])


def admin_port_of(docs: list[Doc], c: Doc) -> int | None:
    """The port a project container serves /healthz, /readyz and /metrics on:
    its admin address's (ADMIN_ADDR) when set, else its HTTP listener's."""
    sub = subcommand(c)
    if sub is None:
        return None
    admin = container_env(docs, c).get(SUBCOMMANDS[sub].get("admin_env", ""))
    return _port_of(admin, 0) if admin else http_port_of(docs, c)


def public_ports_of(docs: list[Doc], c: Doc) -> set[int]:
    """The ports a project container serves the public on: the ingress's gRPC
    and vote ports (unless turned off), the logs app's listener; none for the
    consumer."""
    sub = subcommand(c)
    if sub is None or not SUBCOMMANDS[sub]["public"]:
        return set()
    env, served = container_env(docs, c), SUBCOMMANDS[sub]
    ports = set()
    if sub != "ingress" or env.get("NO_HTTP_VOTES", "false") != "true":
        ports.add(http_port_of(docs, c))
    if sub == "ingress" and env.get("NO_GRPC", "false") != "true":
        ports.add(_port_of(env.get(served["grpc_env"]), served["grpc_port"]))
    return ports - {admin_port_of(docs, c)}


def _port_of(addr: str | None, default: int) -> int:
    return int(addr.rsplit(":", 1)[1]) if addr else default


def env_errors(where: str, c: Doc, known: set[str], docs: list[Doc]) -> list[str]:
    """Every variable is one the binary reads, or exists only to be expanded ($(VAR))
    into a later one; expansions refer to variables defined before them."""
    errors = []
    env = c.get("env", [])
    expanded = {m for var in env for m in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value", ""))}
    defined: set[str] = set()
    for var in env:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value", "")):
            if ref not in defined:
                errors.append(f"{where}: {var['name']} expands $({ref}), not defined before it")
        if var["name"] not in known and var["name"] not in expanded:
            errors.append(f"{where}: the binary reads no variable {var['name']}")
        defined.add(var["name"])
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            for cm in find(docs, "ConfigMap", source["configMapRef"]["name"]):
                for key in cm.get("data", {}):
                    if key not in known:
                        errors.append(
                            f"{where}: ConfigMap {cm['metadata']['name']} sets {key}, which the binary does not read"
                        )
    return errors
