"""Checks of rendered Kubernetes manifests. Each function takes the rendered
resources and returns a list of problems (empty when all is well), so the
tests can also feed them broken manifests and see each problem reported.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from contract import PART_OF, PROBE_PATHS, PROJECT_IMAGE, SUBCOMMANDS, binary_env_names
from kustomize_lite import containers, pod_specs

Doc = dict[str, Any]
HERE = Path(__file__).resolve().parent
CUSTOM_GROUPS = {"kafka.strimzi.io"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# `kubectl apply` (client side) keeps a copy of each object in an annotation,
# and all annotations of an object together may not pass 256 KiB.
MAX_OBJECT_BYTES = 200 * 1024


def ident(doc: Doc) -> str:
    meta = doc.get("metadata", {})
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def find(docs: Iterable[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def is_project(container: Doc) -> bool:
    return split_image(container.get("image", ""))[0] == PROJECT_IMAGE


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    repo, _, digest = image.partition("@")
    tag = None
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = repo.rpartition(":")
    return repo, tag, digest or None


def generated_name(docs: Iterable[Doc], kind: str, base: str) -> str | None:
    """The name kustomize gave a generated ConfigMap/Secret (base name + hash)."""
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == kind and (name == base or re.fullmatch(re.escape(base) + r"-[a-z0-9]{10}", name)):
            return name
    return None


def workloads(docs: Iterable[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def template_labels(doc: Doc) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        op = expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and value in expr.get("values", []))
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


# --- Kubernetes built-in resources: the official JSON schemas, strict ---------


def k8s_schema_errors(docs: Iterable[Doc], version: str) -> list[str]:
    """Validates every built-in resource against Kubernetes `version`'s schema,
    rejecting unknown fields (kubernetes-validate, strict)."""
    errors = []
    for doc in docs:
        if doc.get("apiVersion", "").split("/")[0] in CUSTOM_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{ident(doc)}: {path}: {e.message}")
        except SchemaNotFoundError as e:
            errors.append(f"{ident(doc)}: {e.message}")
    return errors


@lru_cache(maxsize=None)
def _k8s_definitions(version: str) -> Any:
    """A registry holding kubernetes-validate's strict definitions for `version`."""
    from importlib.resources import files

    from referencing import Registry, Resource

    root = files("kubernetes_validate").joinpath("kubernetes-json-schema")
    wanted = tuple(int(x) for x in version.split(".")[:2])
    dirs = sorted(
        (p.name for p in root.iterdir() if p.name.endswith("-local-strict")),
        key=lambda n: tuple(int(x) for x in n[1:].split("-")[0].split(".")[:2]),
    )
    usable = [n for n in dirs if tuple(int(x) for x in n[1:].split("-")[0].split(".")[:2]) <= wanted]
    definitions = json.loads(root.joinpath(usable[-1], "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def k8s_definition_errors(obj: Any, definition: str, version: str, where: str) -> list[str]:
    """Validates a fragment (e.g. a PodSpec) against one Kubernetes definition, strictly."""
    registry = _k8s_definitions(version)
    schema = {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{where}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


# --- Strimzi -------------------------------------------------------------------

# Kafka settings Strimzi manages itself and rejects in `.spec.kafka.config`
# (KafkaClusterSpec reference), with the documented exceptions.
FORBIDDEN_KAFKA_CONFIG_PREFIXES = (
    "listeners", "advertised.", "broker.", "listener.", "host.name", "port",
    "inter.broker.listener.name", "sasl.", "ssl.", "security.", "password.",
    "log.dir", "zookeeper.connect", "zookeeper.set.acl", "zookeeper.ssl",
    "zookeeper.clientCnxnSocket", "authorizer.", "super.user",
    "cruise.control.metrics.topic", "cruise.control.metrics.reporter.bootstrap.servers",
    "node.id", "process.roles", "controller.", "metadata.log.dir",
    "zookeeper.metadata.migration.enable", "client.quota.callback.static.kafka.admin.",
    "client.quota.callback.static.produce", "client.quota.callback.static.fetch",
    "client.quota.callback.static.storage.per.volume.limit.min.available.",
    "client.quota.callback.static.excluded.principal.name.list",
)  # fmt: skip
ALLOWED_KAFKA_CONFIG = {
    "zookeeper.connection.timeout.ms", "sasl.server.max.receive.size", "ssl.cipher.suites",
    "ssl.protocol", "ssl.enabled.protocols", "ssl.secure.random.implementation",
    "cruise.control.metrics.topic.num.partitions", "cruise.control.metrics.topic.replication.factor",
    "cruise.control.metrics.topic.retention.ms", "cruise.control.metrics.topic.auto.create.retries",
    "cruise.control.metrics.topic.auto.create.timeout.ms",
    "cruise.control.metrics.topic.min.insync.replicas", "controller.quorum.election.backoff.max.ms",
    "controller.quorum.election.timeout.ms", "controller.quorum.fetch.timeout.ms",
}  # fmt: skip


@lru_cache(maxsize=None)
def strimzi_schema() -> dict[str, Any]:
    return yaml.safe_load((HERE / "strimzi-v1.schema.yaml").read_text())


def strimzi_errors(docs: list[Doc]) -> list[str]:
    errors = []
    schema = strimzi_schema()
    for doc in docs:
        if doc.get("apiVersion", "").split("/")[0] != "kafka.strimzi.io":
            continue
        kind = doc.get("kind")
        # The schema's $defs hold the kinds (capitalised) and their parts (lower case).
        if kind not in schema["$defs"] or not kind[0].isupper():
            errors.append(f"{ident(doc)}: no schema for Strimzi kind {kind}")
            continue
        validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"})
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            errors.append(f"{ident(doc)}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}")
    if errors:
        return errors

    for kafka in find(docs, "Kafka"):
        name, ns = kafka["metadata"]["name"], kafka["metadata"].get("namespace")
        if kafka["metadata"].get("annotations", {}).get("strimzi.io/kraft") == "disabled":
            errors.append(f"{ident(kafka)}: KRaft disabled (Strimzi 0.46+ runs KRaft only)")
        pools = [
            p
            for p in find(docs, "KafkaNodePool")
            if p["metadata"]["labels"]["strimzi.io/cluster"] == name and p["metadata"].get("namespace") == ns
        ]
        roles = {r for p in pools for r in p["spec"]["roles"]}
        for role in ("controller", "broker"):
            if role not in roles:
                errors.append(f"{ident(kafka)}: no KafkaNodePool with the {role} role")
        brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
        controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
        if controllers % 2 == 0:
            errors.append(f"{ident(kafka)}: {controllers} controllers (a KRaft quorum wants an odd number)")
        config = kafka["spec"]["kafka"].get("config", {})
        for key in config:
            if key not in ALLOWED_KAFKA_CONFIG and key.startswith(FORBIDDEN_KAFKA_CONFIG_PREFIXES):
                errors.append(f"{ident(kafka)}: spec.kafka.config.{key} is managed by Strimzi")
        for key in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
        ):
            if int(config.get(key, 1)) > brokers:
                errors.append(f"{ident(kafka)}: {key}={config[key]} but only {brokers} brokers")
        default_rf = int(config.get("default.replication.factor", 1))
        if int(config.get("min.insync.replicas", 1)) > default_rf:
            errors.append(f"{ident(kafka)}: min.insync.replicas above default.replication.factor")
        for topic in find(docs, "KafkaTopic"):
            if topic["metadata"]["labels"]["strimzi.io/cluster"] != name:
                continue
            replicas = topic["spec"].get("replicas", default_rf)
            if replicas > brokers:
                errors.append(f"{ident(topic)}: {replicas} replicas but only {brokers} brokers")
            min_isr = int(topic["spec"].get("config", {}).get("min.insync.replicas", config.get("min.insync.replicas", 1)))
            if min_isr > replicas:
                errors.append(f"{ident(topic)}: min.insync.replicas {min_isr} above its {replicas} replicas")

    clusters = {(k["metadata"]["name"], k["metadata"].get("namespace")) for k in find(docs, "Kafka")}
    for doc in find(docs, "KafkaNodePool") + find(docs, "KafkaTopic"):
        cluster = doc["metadata"]["labels"]["strimzi.io/cluster"]
        if (cluster, doc["metadata"].get("namespace")) not in clusters:
            errors.append(f"{ident(doc)}: strimzi.io/cluster={cluster} names no Kafka in its namespace")
    return errors


def topic_name(topic: Doc) -> str:
    return topic["spec"].get("topicName", topic["metadata"]["name"])


# --- Cross-references ------------------------------------------------------------


def settings(docs: list[Doc]) -> dict[str, str]:
    """The votestream ConfigMap's data (the settings every votestream container loads)."""
    name = generated_name(docs, "ConfigMap", "votestream-config")
    return find(docs, "ConfigMap", name)[0].get("data", {}) if name else {}


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The environment of a container as far as literal values tell: its ConfigMaps
    (envFrom) overridden by its own `value`s."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cms = find(docs, "ConfigMap", source["configMapRef"]["name"])
            if cms:
                env.update(cms[0].get("data", {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def reference_errors(docs: list[Doc]) -> list[str]:
    """Services, StatefulSets, HPAs, Ingresses and NetworkPolicies point at things
    that exist; pods reference existing ConfigMaps, Secrets, keys and volumes."""
    errors = []
    by_kind: dict[str, dict[tuple[str | None, str], Doc]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[(d["metadata"].get("namespace"), d["metadata"]["name"])] = d

    def get(kind: str, ns: str | None, name: str) -> Doc | None:
        return by_kind.get(kind, {}).get((ns, name))

    for w in workloads(docs):
        ns = w["metadata"].get("namespace")
        if w["kind"] not in ("Pod", "CronJob", "Job") and not label_selector_matches(
            w["spec"]["selector"], template_labels(w)
        ):
            errors.append(f"{ident(w)}: selector does not match its pod template's labels")
        if w["kind"] == "StatefulSet" and not get("Service", ns, w["spec"]["serviceName"]):
            errors.append(f"{ident(w)}: serviceName {w['spec']['serviceName']} is no Service")
        for spec in pod_specs(w):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            volumes.update({t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])})
            for v in spec.get("volumes", []):
                if "configMap" in v and not get("ConfigMap", ns, v["configMap"]["name"]):
                    errors.append(f"{ident(w)}: volume {v['name']}: no ConfigMap {v['configMap']['name']}")
                if "secret" in v and not get("Secret", ns, v["secret"]["secretName"]):
                    errors.append(f"{ident(w)}: volume {v['name']}: no Secret {v['secret']['secretName']}")
            for c in containers(spec):
                where = f"{ident(w)}: container {c['name']}"
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes:
                        errors.append(f"{where}: mounts undeclared volume {m['name']}")
                for source in c.get("envFrom", []):
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in source and not source[key].get("optional"):
                            if not get(kind, ns, source[key]["name"]):
                                errors.append(f"{where}: envFrom: no {kind} {source[key]['name']}")
                for var in c.get("env", []):
                    ref = var.get("valueFrom", {})
                    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                        if key not in ref or ref[key].get("optional"):
                            continue
                        target = get(kind, ns, ref[key]["name"])
                        if not target:
                            errors.append(f"{where}: env {var['name']}: no {kind} {ref[key]['name']}")
                        elif ref[key]["key"] not in {**target.get("data", {}), **target.get("stringData", {})}:
                            errors.append(f"{where}: env {var['name']}: {kind} {ref[key]['name']} has no key {ref[key]['key']}")

    for svc in find(docs, "Service"):
        ns, selector = svc["metadata"].get("namespace"), svc["spec"].get("selector", {})
        pods = [w for w in workloads(docs) if w["metadata"].get("namespace") == ns and selects(selector, template_labels(w))]
        if not pods:
            errors.append(f"{ident(svc)}: selector {selector} matches no workload's pods")
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            declared = [
                p
                for w in pods
                for s in pod_specs(w)
                for c in s["containers"]
                for p in c.get("ports", [])
                if p.get("name") == target or p["containerPort"] == target
            ]
            if not declared:
                errors.append(f"{ident(svc)}: targetPort {target} is no container port of the selected pods")
        node_port = [p["nodePort"] for p in svc["spec"]["ports"] if "nodePort" in p]
        if any(not 30000 <= n <= 32767 for n in node_port):
            errors.append(f"{ident(svc)}: nodePort outside the default range 30000-32767")

    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref, ns = hpa["spec"]["scaleTargetRef"], hpa["metadata"].get("namespace")
        target = get(ref["kind"], ns, ref["name"])
        if not target:
            errors.append(f"{ident(hpa)}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
            continue
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            errors.append(f"{ident(hpa)}: minReplicas above maxReplicas")
        uses_cpu = any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", []))
        if uses_cpu and any(
            "cpu" not in c.get("resources", {}).get("requests", {}) for s in pod_specs(target) for c in s["containers"]
        ):
            errors.append(f"{ident(hpa)}: scales on CPU use, but a container of {ident(target)} requests no CPU")

    for ing in find(docs, "Ingress"):
        ns = ing["metadata"].get("namespace")
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = get("Service", ns, backend["name"])
                if not svc:
                    errors.append(f"{ident(ing)}: path {path['path']}: no Service {backend['name']}")
                    continue
                port = backend["port"]
                if not any(p.get("name") == port.get("name") or p["port"] == port.get("number") for p in svc["spec"]["ports"]):
                    errors.append(f"{ident(ing)}: path {path['path']}: Service {backend['name']} has no port {port}")

    pod_labels = [(w["metadata"].get("namespace"), template_labels(w)) for w in workloads(docs)]
    for pol in find(docs, "NetworkPolicy"):
        ns = pol["metadata"].get("namespace")
        selectors = [pol["spec"]["podSelector"]] + [
            peer["podSelector"] for rule in pol["spec"].get("ingress", []) for peer in rule.get("from", []) if "podSelector" in peer
        ]
        for sel in selectors:
            if not any(n == ns and label_selector_matches(sel, labels) for n, labels in pod_labels):
                errors.append(f"{ident(pol)}: pod selector {sel} matches no pod")
    return errors


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
                    names = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
                    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                        action = c.get(probe, {})
                        port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                        if port is not None and port not in names:
                            errors.append(f"{where}: {probe} port {port} is no container port")
                errors += _image_errors(where, c["image"])
            if any(is_project(c) for c in containers(spec)):
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if not 30 <= grace <= 60:
                    errors.append(f"{ident(w)}: terminationGracePeriodSeconds {grace} outside 30..60 (SIGTERM drain)")
                for c in spec["containers"]:
                    pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                    if pause >= grace / 2:
                        errors.append(f"{ident(w)}: preStop pause {pause}s leaves too little of the {grace}s grace to drain")
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
    and probes on the port and paths that subcommand serves."""
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
                args = c.get("command", [])[1:] + c.get("args", [])
                sub = args[0] if args else None
                if sub not in SUBCOMMANDS:
                    errors.append(f"{where}: runs {args}, not one of the subcommands {sorted(SUBCOMMANDS)}")
                    continue
                errors += env_errors(where, c, known, docs)
                env = container_env(docs, c)
                served = SUBCOMMANDS[sub]
                http_port = _port_of(env.get(served["http_env"]), served["http_port"])
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                if http_port not in ports.values():
                    errors.append(f"{where}: the {sub} HTTP port {http_port} is not a container port")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if probe not in c:
                        continue
                    get = c[probe].get("httpGet")
                    if not get:
                        errors.append(f"{where}: {probe} is not an HTTP probe of /healthz or /readyz")
                        continue
                    port = ports.get(get["port"], get["port"])
                    if port != http_port:
                        errors.append(f"{where}: {probe} on port {get['port']}, but {sub} serves HTTP on {http_port}")
                    if get.get("path") not in served["paths"] & PROBE_PATHS:
                        errors.append(f"{where}: {probe} path {get.get('path')} is not served by {sub}")
                if sub == "ingress":
                    grpc = env.get("NO_GRPC", "false") != "true"
                    if grpc and _port_of(env.get(served["grpc_env"]), served["grpc_port"]) not in ports.values():
                        errors.append(f"{where}: serves gRPC but its port is not a container port")
                    if not grpc and served["grpc_port"] in ports.values():
                        errors.append(f"{where}: NO_GRPC is set but the gRPC port is declared")
    return errors


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
                        errors.append(f"{where}: ConfigMap {cm['metadata']['name']} sets {key}, which the binary does not read")
    return errors


def application_errors(docs: list[Doc]) -> list[str]:
    """The settings agree with the rest: Kafka bootstrap and topics, consumer
    scaling versus partitions, labels, namespaces, object sizes, placeholder secrets."""
    errors = []
    conf = settings(docs)
    if not conf:
        return ["no ConfigMap votestream-config"]
    # Kafka bootstrap: <cluster>-kafka-bootstrap:<port of a plaintext listener>.
    brokers = conf.get("KAFKA_BROKERS", "")
    m = re.fullmatch(r"([a-z0-9-]+)-kafka-bootstrap(?:\.[a-z0-9.-]+)?:(\d+)", brokers)
    kafkas = {k["metadata"]["name"]: k for k in find(docs, "Kafka")}
    if not m or m.group(1) not in kafkas:
        errors.append(f"KAFKA_BROKERS={brokers} is not the bootstrap Service of a Kafka here")
    elif not any(
        l["port"] == int(m.group(2)) and not l["tls"] and l["type"] == "internal"
        for l in kafkas[m.group(1)]["spec"]["kafka"]["listeners"]
    ):
        errors.append(f"KAFKA_BROKERS={brokers}: no plaintext internal listener on that port")

    topics = {topic_name(t): t for t in find(docs, "KafkaTopic")}
    max_consumers = max(
        [h["spec"]["maxReplicas"] for h in find(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "consumer"]
        + [d["spec"].get("replicas", 1) for d in find(docs, "Deployment", "consumer")]
    )
    for var in ("VOTES_TOPIC", "DLQ_TOPIC"):
        name = conf.get(var)
        if name not in topics:
            errors.append(f"{var}={name} is no KafkaTopic")
        elif topics[name]["spec"].get("partitions", 1) < max_consumers:
            errors.append(f"topic {name}: {topics[name]['spec'].get('partitions')} partitions for up to {max_consumers} consumers")

    for d in docs:
        labels = d["metadata"].get("labels", {})
        # Generated ConfigMaps and Secrets carry no labels.
        if any(labels.get(k) != v for k, v in PART_OF.items()) and d["kind"] not in ("ConfigMap", "Secret"):
            errors.append(f"{ident(d)}: no label app.kubernetes.io/part-of=votestream")
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "votestream":
            errors.append(f"{ident(d)}: not in the votestream namespace")
        size = len(json.dumps(d))
        if size > MAX_OBJECT_BYTES:
            errors.append(f"{ident(d)}: {size} bytes, too big for `kubectl apply` (use --server-side)")
    for w in workloads(docs):
        labels = template_labels(w)
        if any(labels.get(k) != v for k, v in PART_OF.items()):
            errors.append(f"{ident(w)}: pods lack the label app.kubernetes.io/part-of=votestream")

    secret = generated_name(docs, "Secret", "votestream-secrets")
    if not secret:
        errors.append("no Secret votestream-secrets")
    return errors


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
                errors.append(f"grafana-provisioning/{kind}/{f.name} is not mounted in /etc/grafana/provisioning/{kind}")

    env = {v["name"] for v in container.get("env", [])}
    for f in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (yaml.safe_load(f.read_text()) or {}).get("providers", []):
            path = provider.get("options", {}).get("path")
            dashboards = [k for k, p in mounted_files.items() if k.endswith(".json")]
            if any(mounted_files[k] != path for k in dashboards):
                errors.append(f"{f.name}: provider {provider.get('name')} reads {path}, dashboards are mounted elsewhere")
    redis_ok = re.compile(r"(redis://)?redis(\.votestream(\.svc(\.cluster\.local)?)?)?:6379/?")
    for f in sorted((provisioning / "datasources").glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            if ds.get("type") != "redis-datasource":
                continue
            url = str(ds.get("url", ""))
            var = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", url)
            if var and var.group(1) not in env:
                errors.append(f"{f.name}: data source url {url}: the Grafana container has no {var.group(1)}")
            elif not var and not redis_ok.fullmatch(url):
                errors.append(f"{f.name}: data source url {url} does not reach the redis Service")
    return errors
