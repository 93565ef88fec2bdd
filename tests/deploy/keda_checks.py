"""Checks of KEDA's ScaledObjects: KEDA's own CRD schema (tools.py,
crd_checks.py), what its admission webhook refuses (a target that another
HorizontalPodAutoscaler already scales, minReplicaCount above
maxReplicaCount), the Kafka trigger's metadata, which the CRD types only as a
map of strings, against what KEDA's Kafka scaler reads (the `keda:"name=..."`
tags of its typed configuration, in its Go source), and the consumer's
trigger against the votestream settings and topics.
"""

from __future__ import annotations

import re
from functools import lru_cache

import manifest_checks as mc
from contract import consumer_offset_reset
from crd_checks import schema_errors
from manifest_checks import Doc, find, ident
from tools import keda_kafka_scaler_source
from variants import KEDA_VERSIONS

GROUP = "keda.sh"
# KEDA's defaults for a ScaledObject's bounds and target.
DEFAULT_MIN, DEFAULT_MAX = 0, 100
DEFAULT_TARGET = ("apps/v1", "Deployment")


def keda_schema_errors(docs: list[Doc], version: str) -> list[str]:
    return schema_errors(docs, GROUP, version)


@lru_cache(maxsize=None)
def kafka_trigger_keys() -> dict[str, tuple[str, list[str] | None]]:
    """The metadata keys KEDA's Kafka scaler reads from a trigger, each with its
    Go type and allowed values: from the newest KEDA whose scaler source is
    pinned. A key read from the scale target's environment also comes as
    `<key>FromEnv`, naming the variable."""
    version, source = next(
        (v, s) for v in reversed(KEDA_VERSIONS) if (s := keda_kafka_scaler_source(v)) is not None
    )
    keys: dict[str, tuple[str, list[str] | None]] = {}
    for go_type, tag in re.findall(r'^\s*\w+\s+(\S+)\s+`keda:"([^"]*)"`', source, re.M):
        params = dict(p.partition("=")[::2] for p in tag.split(","))
        orders = params.get("order", "").split(";")
        if "triggerMetadata" not in orders:
            continue
        enum = params["enum"].split(";") if "enum" in params else None
        keys[params["name"]] = (go_type, enum)
        if "resolvedEnv" in orders:
            keys[params["name"] + "FromEnv"] = ("string", None)
    if "lagThreshold" not in keys:
        raise AssertionError(
            f"KEDA {version}'s Kafka scaler declares no lagThreshold: has its source changed?"
        )
    return keys


def kafka_trigger_errors(where: str, metadata: dict[str, str]) -> list[str]:
    """A kafka trigger's metadata: keys the scaler reads, values it parses, and
    the combinations its validation refuses."""
    errors = []
    keys = kafka_trigger_keys()
    for key, value in metadata.items():
        if key not in keys:
            errors.append(f"{where}: KEDA's Kafka scaler reads no metadata {key}")
            continue
        go_type, enum = keys[key]
        if go_type == "bool" and value not in ("true", "false"):
            errors.append(f"{where}: {key} is {value!r}, not 'true' or 'false'")
        elif go_type.startswith("int") and not re.fullmatch(r"-?\d+", str(value)):
            errors.append(f"{where}: {key} is {value!r}, not an integer")
        elif enum and value not in enum:
            errors.append(f"{where}: {key} is {value!r}, not one of {enum}")
    on = {k for k, v in metadata.items() if v == "true"}
    if {"allowIdleConsumers", "limitToPartitionsWithLag"} <= on:
        errors.append(f"{where}: allowIdleConsumers and limitToPartitionsWithLag exclude each other")
    if on & {"limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions"} and not metadata.get("topic"):
        errors.append(
            f"{where}: limitToPartitionsWithLag and ensureEvenDistributionOfPartitions need a topic"
        )
    threshold = str(metadata.get("lagThreshold", "10"))
    if re.fullmatch(r"-?\d+", threshold) and int(threshold) <= 0:
        errors.append(f"{where}: lagThreshold must be positive")
    return errors


def keda_errors(docs: list[Doc]) -> list[str]:
    """Each ScaledObject scales a workload that exists, alone, within sound bounds,
    on Kafka triggers KEDA can read; the consumer's agrees with the settings."""
    errors = []
    for so in find(docs, "ScaledObject"):
        where, spec, ns = ident(so), so["spec"], so["metadata"].get("namespace")
        ref = spec["scaleTargetRef"]
        api_version, kind = ref.get("apiVersion", DEFAULT_TARGET[0]), ref.get("kind", DEFAULT_TARGET[1])
        targets = [
            d
            for d in find(docs, kind, ref["name"])
            if d["apiVersion"] == api_version and d["metadata"].get("namespace") == ns
        ]
        if not targets:
            errors.append(f"{where}: scaleTargetRef {api_version} {kind}/{ref['name']} does not exist")
        if spec.get("minReplicaCount", DEFAULT_MIN) > spec.get("maxReplicaCount", DEFAULT_MAX):
            errors.append(f"{where}: minReplicaCount above maxReplicaCount")
        for hpa in find(docs, "HorizontalPodAutoscaler"):
            other = hpa["spec"]["scaleTargetRef"]
            if hpa["metadata"].get("namespace") == ns and (other["kind"], other["name"]) == (
                kind,
                ref["name"],
            ):
                errors.append(
                    f"{where}: {ident(hpa)} scales {kind}/{ref['name']} too (KEDA makes its own HPA)"
                )
        for i, trigger in enumerate(spec["triggers"]):
            if trigger["type"] == "kafka":
                errors += kafka_trigger_errors(f"{where}: trigger {i}", trigger["metadata"])
        if kind in ("Deployment", "StatefulSet") and ref["name"] == "consumer":
            errors += _consumer_trigger_errors(docs, so)
    return errors


def _consumer_trigger_errors(docs: list[Doc], so: Doc) -> list[str]:
    """The consumer scales on the lag of its own group on the votes topic, read
    from the bootstrap Service it uses, and no further than the partitions."""
    where = ident(so)
    kafka = [t["metadata"] for t in so["spec"]["triggers"] if t["type"] == "kafka"]
    if not kafka:
        return [f"{where}: the consumer scales on no kafka trigger"]
    conf = mc.settings(docs)
    ns = so["metadata"].get("namespace")
    host, _, port = conf.get("KAFKA_BROKERS", "").partition(":")
    # KEDA's operator runs in its own namespace: the Service's name must carry the consumer's.
    reachable = {f"{host}.{ns}.svc:{port}", f"{host}.{ns}.svc.cluster.local:{port}"}
    errors = []
    for meta in kafka:
        if meta.get("consumerGroup") != conf.get("CONSUMER_GROUP"):
            errors.append(
                f"{where}: consumerGroup {meta.get('consumerGroup')}, the consumer's is {conf.get('CONSUMER_GROUP')}"
            )
        if meta.get("topic") != conf.get("VOTES_TOPIC"):
            errors.append(f"{where}: topic {meta.get('topic')}, the consumer reads {conf.get('VOTES_TOPIC')}")
        if meta.get("bootstrapServers") not in reachable:
            errors.append(
                f"{where}: bootstrapServers {meta.get('bootstrapServers')} is not KAFKA_BROKERS "
                f"with its namespace (one of {sorted(reachable)})"
            )
        if meta.get("offsetResetPolicy", "latest") != consumer_offset_reset():
            errors.append(
                f"{where}: offsetResetPolicy {meta.get('offsetResetPolicy', 'latest')}, "
                f"the consumer's auto.offset.reset is {consumer_offset_reset()}"
            )
    topics = {mc.topic_name(t): t for t in find(docs, "KafkaTopic")}
    votes = topics.get(conf.get("VOTES_TOPIC"))
    most = so["spec"].get("maxReplicaCount", DEFAULT_MAX)
    if votes and most > votes["spec"].get("partitions", 1):
        errors.append(
            f"{where}: maxReplicaCount {most} above the {votes['spec'].get('partitions', 1)} partitions of {mc.topic_name(votes)}"
        )
    return errors
