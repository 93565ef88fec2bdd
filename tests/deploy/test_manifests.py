"""The Kubernetes manifests (deploy/k8s, base and overlays), rendered by
`kubectl kustomize` as `kubectl apply -k` would, checked offline: Kubernetes'
own schemas and the CRDs of Strimzi, KEDA and the Prometheus Operator with
unknown fields rejected, cross-references, pod hardening, disruption budgets,
scraping and autoscaling, agreement with what the votestream binary serves
and reads, and what keeps it private: NetworkPolicies, admin ports no
Service publishes, Kafka users and ACLs, placeholder Secrets that agree."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import pytest
import yaml

import grafana_checks
import manifest_checks as mc
import pod_checks
import security_checks
from variants import (
    K8S,
    K8S_VERSIONS,
    KEDA_VERSIONS,
    PROMETHEUS_OPERATOR_VERSIONS,
    STRIMZI_VERSIONS,
    VARIANTS,
    rendered,
)
from contract import PROBE_PATHS, ROOT, grpc_services
from crd_checks import CRD_SOURCES
from keda_checks import keda_errors, keda_schema_errors
from manifest_checks import containers, pod_specs
from monitoring_checks import monitor_errors, prometheus_operator_schema_errors
from strimzi_checks import strimzi_errors, strimzi_schema_errors
from tools import kustomize_build


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_resource_matches_the_kubernetes_schema_strictly(docs, version):
    assert mc.k8s_schema_errors(docs, version) == []


@pytest.mark.parametrize("strimzi", STRIMZI_VERSIONS)
def test_strimzi_resources_match_strimzis_crds_strictly(docs, strimzi):
    assert [d["kind"] for d in docs if d["apiVersion"].startswith("kafka.strimzi.io/")], "no Strimzi resource"
    assert strimzi_schema_errors(docs, strimzi) == []


def test_strimzi_resources_follow_the_rules_strimzi_checks_when_reconciling(docs):
    assert strimzi_errors(docs) == []


def test_every_custom_resource_group_is_checked_against_its_operators_crds():
    assert set(CRD_SOURCES) == mc.CUSTOM_GROUPS


@pytest.mark.parametrize("keda", KEDA_VERSIONS)
def test_keda_resources_match_kedas_crd_strictly(docs, keda):
    assert keda_schema_errors(docs, keda) == []


def test_scaled_objects_are_ones_keda_accepts_and_its_kafka_scaler_reads(docs):
    assert keda_errors(docs) == []


@pytest.mark.parametrize("version", PROMETHEUS_OPERATOR_VERSIONS)
def test_monitoring_resources_match_the_prometheus_operators_crds_strictly(docs, version):
    assert [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")], "no PodMonitor"
    assert prometheus_operator_schema_errors(docs, version) == []


def test_every_votestream_process_is_scraped_once_on_its_metrics_port(docs):
    assert monitor_errors(docs) == []


def test_disruption_budgets_let_pods_go_one_at_a_time(docs):
    assert mc.disruption_budget_errors(docs) == []


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "base"])
def test_every_targeted_patch_of_an_overlay_selects_a_resource(variant):
    folder = K8S / variant
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    # Patches apply to what the overlay's resources render (a patch may delete
    # what it selects, so the overlay's own output will not do).
    inputs = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        inputs += kustomize_build(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    assert mc.patch_target_errors(kustomization, inputs) == []


def test_every_reference_resolves(docs):
    assert mc.reference_errors(docs) == []


def test_every_pod_is_probed_limited_non_root_read_only_and_pinned(docs):
    assert pod_checks.pod_hygiene_errors(docs) == []


def test_votestream_containers_match_what_the_binary_serves_and_reads(docs):
    assert pod_checks.votestream_container_errors(docs) == []


def test_settings_agree_with_kafka_topics_and_consumer_scaling(docs):
    assert mc.application_errors(docs) == []


def test_network_policies_let_through_exactly_what_must_talk(docs):
    assert security_checks.network_errors(docs) == []


def test_services_publish_only_public_ports_never_an_admin_port(docs):
    assert security_checks.exposure_errors(docs) == []


def test_kafka_clients_log_in_over_tls_as_users_allowed_only_what_they_do(docs):
    assert security_checks.kafka_security_errors(docs) == []


def test_secrets_are_agreeing_placeholders(docs):
    assert security_checks.secret_errors(docs) == []


def test_grafana_provisioning_is_mounted_where_grafana_reads_it(docs):
    assert grafana_checks.grafana_errors(docs, ROOT / "grafana-provisioning") == []


def test_the_base_holds_every_component_of_the_deployment(base):
    def one(kind, name):
        found = mc.find(base, kind, name)
        assert len(found) == 1, f"{kind}/{name}"
        return found[0]

    one("Namespace", "votestream")
    kafka = one("Kafka", "votestream")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1"
    pool = one("KafkaNodePool", "dual-role")
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}  # KRaft, no ZooKeeper
    assert {mc.topic_name(t) for t in mc.find(base, "KafkaTopic")} == {"votes", "votes.dlq"}

    one("StatefulSet", "redis")
    one("Service", "redis")
    mongo = one("StatefulSet", "mongodb")
    assert mongo["spec"]["volumeClaimTemplates"], "MongoDB keeps its data on a volume"
    mongo_env = {e["name"]: e for e in pod_specs(mongo)[0]["containers"][0]["env"]}
    for var in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"):
        assert "secretKeyRef" in mongo_env[var]["valueFrom"]
    one("Service", "mongodb")

    grafana = one("Deployment", "grafana")
    plugin_install = " ".join(" ".join(c.get("command", [])) for c in containers(pod_specs(grafana)[0]))
    assert "redis-datasource" in plugin_install

    consumer = one("StatefulSet", "consumer")
    assert consumer["spec"]["replicas"] == 2
    # Static group membership: each pod's stable name is its group member name.
    env = {e["name"]: e for e in containers(pod_specs(consumer)[0])[0]["env"]}
    assert env["GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert int(env["SESSION_TIMEOUT_MS"]["value"]) >= 30_000
    assert one("Service", consumer["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    hpa = one("HorizontalPodAutoscaler", "consumer")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)

    types = {s["metadata"]["name"]: s["spec"].get("type", "ClusterIP") for s in mc.find(base, "Service")}
    assert types["logs"] == "LoadBalancer"
    assert types["ingress-grpc"] == types["ingress-http"] == "ClusterIP"
    assert "NodePort" in types.values()
    assert any(len(spec["containers"]) >= 2 for w in mc.workloads(base) for spec in pod_specs(w)), (
        "one Pod runs two containers"
    )
    assert mc.generated_name(base, "ConfigMap", "votestream-config")
    for secret in ("votestream-secrets", "votestream-stores", "redis-users", "kafka-ingress", "kafka-consumer"):
        assert mc.generated_name(base, "Secret", secret), secret
    assert mc.find(base, "Secret", mc.generated_name(base, "Secret", "votestream-tls"))[0]["type"] == "kubernetes.io/tls"
    assert mc.generated_name(base, "Secret", "votestream-jwks")
    assert {u["metadata"]["name"] for u in mc.find(base, "KafkaUser")} == {"ingress", "consumer", "operator"}
    (deny,) = mc.find(base, "NetworkPolicy", "default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_the_base_scales_the_consumer_on_cpu_and_the_keda_overlay_on_its_groups_lag():
    base, keda = rendered("base"), rendered("overlays/keda")
    assert mc.find(base, "HorizontalPodAutoscaler", "consumer") and not mc.find(base, "ScaledObject")
    assert not mc.find(keda, "HorizontalPodAutoscaler"), "KEDA's HPA would fight the base's"
    (scaled,) = mc.find(keda, "ScaledObject")
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "StatefulSet", "consumer")
    assert mc.find(keda, "StatefulSet", "consumer")

    conf = mc.settings(keda)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == conf["CONSUMER_GROUP"]
    assert trigger["metadata"]["topic"] == conf["VOTES_TOPIC"]
    (votes,) = [t for t in mc.find(keda, "KafkaTopic") if mc.topic_name(t) == conf["VOTES_TOPIC"]]
    assert scaled["spec"]["maxReplicaCount"] <= votes["spec"]["partitions"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert scaled["spec"]["minReplicaCount"] >= 2, "one consumer keeps counting while another restarts"


def test_the_base_scrapes_and_budgets_every_votestream_deployment(base):
    monitors = {m["metadata"]["name"] for m in mc.find(base, "PodMonitor")}
    assert monitors == {"ingress", "consumer", "logs"}
    budgets = {b["metadata"]["name"] for b in mc.find(base, "PodDisruptionBudget")}
    assert budgets == {"ingress-grpc", "ingress-http", "consumer", "logs"}


def test_each_ingress_deployment_serves_one_protocol(base):
    env = {}
    for name in ("ingress-grpc", "ingress-http"):
        (c,) = pod_specs(mc.find(base, "Deployment", name)[0])[0]["containers"]
        assert c["args"] == ["ingress"]
        env[name] = mc.container_env(base, c)
    assert env["ingress-grpc"].get("NO_HTTP_VOTES") == "true" and "NO_GRPC" not in env["ingress-grpc"]
    assert env["ingress-http"].get("NO_GRPC") == "true" and "NO_HTTP_VOTES" not in env["ingress-http"]


def test_the_ingress_routes_post_votes_and_every_grpc_service(base):
    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for ing in mc.find(base, "Ingress")
        for rule in ing["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes["/votes"] == "ingress-http"
    for service in grpc_services() + ["grpc.health.v1.Health"]:
        assert routes.get(f"/{service}") == "ingress-grpc", service
    grpc = [i for i in mc.find(base, "Ingress") if "/votes.v1.VoteService" in str(i)][0]
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"


def test_committed_secrets_are_placeholders(base):
    secret = mc.find(base, "Secret", mc.generated_name(base, "Secret", "votestream-secrets"))[0]
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert values, "the generated Secret is empty"
    for key, value in values.items():
        if "PASSWORD" in key:
            assert value.startswith("change-me"), f"{key} looks like a real secret"
            # It is put into a connection string as it is.
            assert quote(value, safe="-_.~") == value, f"{key} must be URL-safe"
        if key.endswith("_URL"):
            assert not re.search(r"//[^/@]*:[^/@]*@", value), f"{key} carries a password"


def test_graceful_termination_covers_the_sigterm_drain(base):
    for w in mc.workloads(base):
        for spec in pod_specs(w):
            if any(mc.is_project(c) for c in spec["containers"]):
                assert 30 <= spec["terminationGracePeriodSeconds"] <= 60, mc.ident(w)


def test_probe_paths_are_routes_in_the_source():
    """Once the servers exist in src/, the probed paths must be among their routes."""
    modules = [ROOT / "src" / name for name in ("ingress", "consumer", "logs")]
    if not any(m.is_dir() or m.with_suffix(".rs").is_file() for m in modules):
        pytest.skip("no HTTP server in src/ yet (src/ingress, src/consumer, src/logs)")
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    for path in sorted(PROBE_PATHS):
        assert f'"{path}"' in source, f"no route {path} in src/"
