"""Checks of the Strimzi custom resources (Kafka, KafkaNodePool, KafkaTopic):
a strict schema of the fields Strimzi documents (strimzi-v1.schema.yaml), then
what the schema cannot say: the pools and topics belong to a Kafka that has
controllers and brokers, the brokers can hold the replicas asked for, and the
configuration leaves alone what Strimzi manages.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from manifest_checks import Doc, find, ident

HERE = Path(__file__).resolve().parent

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
            min_isr = int(
                topic["spec"]
                .get("config", {})
                .get("min.insync.replicas", config.get("min.insync.replicas", 1))
            )
            if min_isr > replicas:
                errors.append(f"{ident(topic)}: min.insync.replicas {min_isr} above its {replicas} replicas")

    clusters = {(k["metadata"]["name"], k["metadata"].get("namespace")) for k in find(docs, "Kafka")}
    for doc in find(docs, "KafkaNodePool") + find(docs, "KafkaTopic"):
        cluster = doc["metadata"]["labels"]["strimzi.io/cluster"]
        if (cluster, doc["metadata"].get("namespace")) not in clusters:
            errors.append(f"{ident(doc)}: strimzi.io/cluster={cluster} names no Kafka in its namespace")
    return errors
