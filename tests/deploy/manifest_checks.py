"""Checks of rendered Kubernetes manifests: the official schemas, references
between resources, and the votestream settings against Kafka and scaling
(pods, Strimzi and Grafana have modules of their own). Each check takes the
rendered resources and returns a list of problems (empty when all is well), so
the tests can also feed them broken manifests and see each problem reported.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

from contract import PART_OF, PROJECT_IMAGE

Doc = dict[str, Any]
# API groups of custom resources: each is checked against its operator's CRDs
# (crd_checks.py), not Kubernetes' own schemas; PrometheusRule's rules are
# also checked by promtool (test_prometheus_rules.py).
CUSTOM_GROUPS = {"kafka.strimzi.io", "keda.sh", "monitoring.coreos.com"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
WORKLOADS_WITH_TEMPLATE = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# `kubectl apply` (client side) keeps a copy of each object in an annotation,
# and all annotations of an object together may not pass 256 KiB.
MAX_OBJECT_BYTES = 200 * 1024


def ident(doc: Doc) -> str:
    meta = doc.get("metadata", {})
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def find(docs: Iterable[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_specs(res: Doc) -> list[Doc]:
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


def containers(pod_spec: Doc) -> list[Doc]:
    """The init containers and the containers of a pod spec."""
    return list(pod_spec.get("initContainers", [])) + list(pod_spec.get("containers", []))


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


def topic_name(topic: Doc) -> str:
    """The Kafka name of a KafkaTopic."""
    return topic["spec"].get("topicName", topic["metadata"]["name"])


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


# --- Overlays --------------------------------------------------------------------


def patch_target_errors(kustomization: Doc, docs: list[Doc]) -> list[str]:
    """Each `target` of a kustomization's patches selects one of the resources it
    rendered (kustomize applies a patch that selects nothing without a word)."""
    errors = []

    def selected(doc: Doc, target: Doc) -> bool:
        group, _, version = doc["apiVersion"].rpartition("/")
        fields = {
            "group": group,
            "version": version,
            "kind": doc["kind"],
            "name": doc["metadata"]["name"],
            "namespace": doc["metadata"].get("namespace", ""),
        }
        # kustomize anchors each of these regular expressions.
        return all(re.fullmatch(pattern, fields[f]) for f, pattern in target.items())

    for patch in kustomization.get("patches", []):
        target = patch.get("target")
        if target is None:
            continue  # a patch naming its resource: kustomize fails when there is none
        unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
        if unknown:
            errors.append(f"patch target {target}: this check knows no {sorted(unknown)}")
        elif not any(selected(d, target) for d in docs):
            errors.append(f"patch target {target} selects no resource")
    return errors


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


def strimzi_secret_names(docs: list[Doc]) -> set[tuple[str | None, str]]:
    """The Secrets Strimzi makes at run time, which pods may mount: each Kafka
    cluster's `<name>-cluster-ca-cert` (the CA its clients trust) and each
    KafkaUser's own."""
    names = {(k["metadata"].get("namespace"), f"{k['metadata']['name']}-cluster-ca-cert") for k in find(docs, "Kafka")}
    names |= {(u["metadata"].get("namespace"), u["metadata"]["name"]) for u in find(docs, "KafkaUser")}
    return names


def strimzi_pods(docs: list[Doc]) -> list[tuple[str | None, dict[str, str]]]:
    """(namespace, labels) of the pods Strimzi runs for each KafkaNodePool, with
    the labels it gives them (cluster, kind, name, pool, and each role)."""
    pods = []
    for pool in find(docs, "KafkaNodePool"):
        cluster = pool["metadata"].get("labels", {}).get("strimzi.io/cluster", "")
        labels = {
            "strimzi.io/cluster": cluster,
            "strimzi.io/kind": "Kafka",
            "strimzi.io/name": f"{cluster}-kafka",
            "strimzi.io/pool-name": pool["metadata"]["name"],
            "app.kubernetes.io/part-of": f"strimzi-{cluster}",
        }
        for role in pool["spec"].get("roles", []):
            labels[f"strimzi.io/{role}-role"] = "true"
        pods.append((pool["metadata"].get("namespace"), labels))
    return pods


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
                if (
                    "secret" in v
                    and not get("Secret", ns, v["secret"]["secretName"])
                    and (ns, v["secret"]["secretName"]) not in strimzi_secret_names(docs)
                ):
                    errors.append(f"{ident(w)}: volume {v['name']}: no Secret {v['secret']['secretName']}")
                elif "secret" in v and get("Secret", ns, v["secret"]["secretName"]):
                    data = get("Secret", ns, v["secret"]["secretName"]).get("data", {})
                    for item in v["secret"].get("items", []):
                        if item["key"] not in data:
                            errors.append(
                                f"{ident(w)}: volume {v['name']}: Secret {v['secret']['secretName']} has no key {item['key']}"
                            )
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
                        elif ref[key]["key"] not in {
                            **target.get("data", {}),
                            **target.get("stringData", {}),
                        }:
                            errors.append(
                                f"{where}: env {var['name']}: {kind} {ref[key]['name']} has no key {ref[key]['key']}"
                            )

    for svc in find(docs, "Service"):
        ns, selector = svc["metadata"].get("namespace"), svc["spec"].get("selector", {})
        pods = [
            w
            for w in workloads(docs)
            if w["metadata"].get("namespace") == ns and selects(selector, template_labels(w))
        ]
        if not pods:
            errors.append(f"{ident(svc)}: selector {selector} matches no workload's pods")
            continue
        for port in svc["spec"].get("ports", []):
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
        node_port = [p["nodePort"] for p in svc["spec"].get("ports", []) if "nodePort" in p]
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
            "cpu" not in c.get("resources", {}).get("requests", {})
            for s in pod_specs(target)
            for c in s["containers"]
        ):
            errors.append(
                f"{ident(hpa)}: scales on CPU use, but a container of {ident(target)} requests no CPU"
            )

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
                if not any(
                    p.get("name") == port.get("name") or p["port"] == port.get("number")
                    for p in svc["spec"]["ports"]
                ):
                    errors.append(
                        f"{ident(ing)}: path {path['path']}: Service {backend['name']} has no port {port}"
                    )

    pod_labels = [(w["metadata"].get("namespace"), template_labels(w)) for w in workloads(docs)]
    pod_labels += strimzi_pods(docs)
    for pol in find(docs, "NetworkPolicy"):
        ns = pol["metadata"].get("namespace")
        # Peers in this namespace (those with a namespaceSelector are pods elsewhere).
        selectors = [pol["spec"]["podSelector"]] + [
            peer["podSelector"]
            for direction, side in (("ingress", "from"), ("egress", "to"))
            for rule in pol["spec"].get(direction, [])
            for peer in rule.get(side, [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        ]
        for sel in selectors:
            if not any(n == ns and label_selector_matches(sel, labels) for n, labels in pod_labels):
                errors.append(f"{ident(pol)}: pod selector {sel} matches no pod")
    return errors


def disruption_budget_errors(docs: list[Doc]) -> list[str]:
    """Each PodDisruptionBudget covers pods of a workload and lets one of them be
    evicted (else a node drain hangs); no pod falls under two (the eviction API
    refuses such a pod); every Deployment of the project image has one."""
    errors = []
    budgets = find(docs, "PodDisruptionBudget")
    for w in find(docs, "Deployment") + find(docs, "StatefulSet"):
        ns, labels = w["metadata"].get("namespace"), template_labels(w)
        mine = [
            b
            for b in budgets
            if b["metadata"].get("namespace") == ns and label_selector_matches(b["spec"]["selector"], labels)
        ]
        if len(mine) > 1:
            errors.append(f"{ident(w)}: its pods fall under {len(mine)} PodDisruptionBudgets")
        if not mine and any(is_project(c) for s in pod_specs(w) for c in containers(s)):
            errors.append(f"{ident(w)}: no PodDisruptionBudget")
        replicas = w["spec"].get("replicas", 1)
        for b in mine:
            spec = b["spec"]
            if spec.get("maxUnavailable") in (0, "0%") or (
                isinstance(spec.get("minAvailable"), int) and spec["minAvailable"] >= replicas
            ):
                errors.append(f"{ident(b)}: lets no pod of {ident(w)} ({replicas} replicas) be evicted")
    for b in budgets:
        ns = b["metadata"].get("namespace")
        if not any(
            w["metadata"].get("namespace") == ns
            and label_selector_matches(b["spec"]["selector"], template_labels(w))
            for w in workloads(docs)
        ):
            errors.append(f"{ident(b)}: selector {b['spec']['selector']} matches no workload's pods")
    return errors


def application_errors(docs: list[Doc]) -> list[str]:
    """The settings agree with the rest: Kafka bootstrap and topics, consumer
    scaling versus partitions, labels, namespaces, object sizes, placeholder secrets."""
    errors = []
    conf = settings(docs)
    if not conf:
        return ["no ConfigMap votestream-config"]
    # Kafka bootstrap: <cluster>-kafka-bootstrap:<port of an internal listener>
    # (how the clients secure and authenticate on it: security_checks.py).
    brokers = conf.get("KAFKA_BROKERS", "")
    m = re.fullmatch(r"([a-z0-9-]+)-kafka-bootstrap(?:\.[a-z0-9.-]+)?:(\d+)", brokers)
    kafkas = {k["metadata"]["name"]: k for k in find(docs, "Kafka")}
    if not m or m.group(1) not in kafkas:
        errors.append(f"KAFKA_BROKERS={brokers} is not the bootstrap Service of a Kafka here")
    elif not any(
        listener["port"] == int(m.group(2)) and listener["type"] == "internal"
        for listener in kafkas[m.group(1)]["spec"]["kafka"]["listeners"]
    ):
        errors.append(f"KAFKA_BROKERS={brokers}: no internal listener on that port")

    topics = {topic_name(t): t for t in find(docs, "KafkaTopic")}
    max_consumers = max(
        [
            h["spec"]["maxReplicas"]
            for h in find(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == "consumer"
        ]
        + [
            s["spec"].get("maxReplicaCount", 100)  # KEDA's default
            for s in find(docs, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == "consumer"
        ]
        + [d["spec"].get("replicas", 1) for d in find(docs, "StatefulSet", "consumer")]
    )
    for var in ("VOTES_TOPIC", "DLQ_TOPIC"):
        name = conf.get(var)
        if name not in topics:
            errors.append(f"{var}={name} is no KafkaTopic")
        elif topics[name]["spec"].get("partitions", 1) < max_consumers:
            errors.append(
                f"topic {name}: {topics[name]['spec'].get('partitions')} partitions for up to {max_consumers} consumers"
            )

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
