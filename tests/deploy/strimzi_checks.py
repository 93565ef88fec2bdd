"""Checks of the Strimzi custom resources (Kafka, KafkaNodePool, KafkaTopic):
Strimzi's own CRD schemas (the openAPIV3Schema of each kafka.strimzi.io/v1
CRD, from the io.strimzi:api test jar: see tools.py), with unknown fields
rejected as `kubectl apply` does (crd_checks.py), then what those schemas
cannot say: the rules Strimzi documents but checks only when it reconciles
(storage sizes and ids, listener ports, the Kafka settings it manages
itself), and that pools and topics belong to a Kafka with controllers and
brokers enough for the replicas asked for.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from crd_checks import schema_errors
from manifest_checks import Doc, find, ident
from tools import strimzi_crds
from variants import STRIMZI_VERSIONS

GROUP = "kafka.strimzi.io"
# Strimzi's operators act only on the pools and topics labelled with their cluster.
CLUSTER_LABEL = "strimzi.io/cluster"
# Documented listener rules: 9404 and 9999 are Prometheus's and JMX's.
RESERVED_LISTENER_PORTS = {9404, 9999}


def strimzi_schema_errors(docs: list[Doc], strimzi_version: str) -> list[str]:
    """Every kafka.strimzi.io resource against the CRD of Strimzi `strimzi_version`
    (unknown fields rejected), and its metadata against Kubernetes' ObjectMeta
    (crd_checks.py)."""
    return schema_errors(docs, GROUP, strimzi_version)


@lru_cache(maxsize=None)
def kafka_config_rules() -> tuple[tuple[str, ...], frozenset[str]]:
    """The prefixes of `.spec.kafka.config` keys Strimzi manages itself and rejects,
    and the keys excepted, as the description of that field in its Kafka CRD lists
    them (0.50's does; later ones point to the documentation instead)."""
    for version in STRIMZI_VERSIONS:
        kafka = next(v for v in strimzi_crds(version)["Kafka"]["spec"]["versions"] if v["name"] == "v1")
        config = kafka["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["kafka"]
        text = " ".join(config["properties"]["config"].get("description", "").split())
        m = re.search(r"cannot be set: (.+?) \(with the exception of: (.+?)\)\.", text)
        if m:
            forbidden = tuple(p.strip() for p in m.group(1).split(","))
            return forbidden, frozenset(p.strip() for p in m.group(2).split(","))
    raise AssertionError(f"no Kafka CRD of Strimzi {STRIMZI_VERSIONS} lists the forbidden config prefixes")


def _config_errors(where: str, config: Any) -> list[str]:
    if not isinstance(config, dict):
        return []
    return [
        f"{where}: config {key} is not a string, number or boolean"
        for key, value in config.items()
        if not isinstance(value, (str, int, float, bool))
    ]


def _storage_errors(where: str, storage: dict[str, Any]) -> list[str]:
    errors = []
    volumes = storage.get("volumes", []) if storage.get("type") == "jbod" else [storage]
    if storage.get("type") == "jbod":
        ids = [v.get("id") for v in volumes]
        if not volumes or None in ids or len(set(ids)) != len(ids):
            errors.append(f"{where}: JBOD storage needs volumes, each with its own id")
    for v in volumes:
        if v.get("type") == "persistent-claim" and not v.get("size"):
            errors.append(f"{where}: a persistent-claim volume needs a size")
    return errors


def strimzi_errors(docs: list[Doc]) -> list[str]:
    errors = []
    for version in STRIMZI_VERSIONS:
        errors += strimzi_schema_errors(docs, version)
    for doc in find(docs, "KafkaNodePool") + find(docs, "KafkaTopic"):
        if CLUSTER_LABEL not in doc["metadata"].get("labels", {}):
            errors.append(f"{ident(doc)}: no {CLUSTER_LABEL} label (no Strimzi cluster takes it)")
    if errors:
        return errors

    for pool in find(docs, "KafkaNodePool"):
        roles = pool["spec"]["roles"]
        if not roles or len(set(roles)) != len(roles):
            errors.append(f"{ident(pool)}: roles must be controller and/or broker, each once")
        errors += _storage_errors(ident(pool), pool["spec"]["storage"])
    for topic in find(docs, "KafkaTopic"):
        errors += _config_errors(ident(topic), topic["spec"].get("config"))

    forbidden, excepted = kafka_config_rules()
    for kafka in find(docs, "Kafka"):
        name, ns = kafka["metadata"]["name"], kafka["metadata"].get("namespace")
        if kafka["metadata"].get("annotations", {}).get("strimzi.io/kraft") == "disabled":
            errors.append(f"{ident(kafka)}: KRaft disabled (Strimzi 0.46+ runs KRaft only)")
        listeners = kafka["spec"]["kafka"]["listeners"]
        for field in ("name", "port"):
            values = [listener[field] for listener in listeners]
            if len(set(values)) != len(values):
                errors.append(f"{ident(kafka)}: two listeners with the same {field}")
        for listener in listeners:
            if listener["port"] in RESERVED_LISTENER_PORTS:
                errors.append(f"{ident(kafka)}: listener {listener['name']} on reserved port {listener['port']}")
        pools = [
            p
            for p in find(docs, "KafkaNodePool")
            if p["metadata"]["labels"][CLUSTER_LABEL] == name and p["metadata"].get("namespace") == ns
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
        errors += _config_errors(ident(kafka), config)
        for key in config:
            if key not in excepted and key.startswith(forbidden):
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
            if topic["metadata"]["labels"][CLUSTER_LABEL] != name:
                continue
            replicas = topic["spec"].get("replicas", default_rf)
            if replicas > brokers:
                errors.append(f"{ident(topic)}: {replicas} replicas but only {brokers} brokers")
            min_isr = int(
                topic["spec"]
                .get("config", {})
                .get("min.insync.replicas", config.get("min.insync.replicas", 1))
            )
            if min_isr > replicas:
                errors.append(f"{ident(topic)}: min.insync.replicas {min_isr} above its {replicas} replicas")

    clusters = {(k["metadata"]["name"], k["metadata"].get("namespace")) for k in find(docs, "Kafka")}
    for doc in find(docs, "KafkaNodePool") + find(docs, "KafkaTopic"):
        cluster = doc["metadata"]["labels"][CLUSTER_LABEL]
        if (cluster, doc["metadata"].get("namespace")) not in clusters:
            errors.append(f"{ident(doc)}: {CLUSTER_LABEL}={cluster} names no Kafka in its namespace")
    return errors
