"""Each check, fed the base (or an overlay) with one mistake, reports that
mistake: the green results of test_manifests.py mean something."""

from __future__ import annotations

import base64
import copy
import shutil

import pytest

import grafana_checks
import manifest_checks as mc
import pod_checks
import security_checks
from variants import KEDA_VERSIONS, PROMETHEUS_OPERATOR_VERSIONS, STRIMZI_VERSIONS, rendered
from contract import ROOT
from keda_checks import keda_errors, keda_schema_errors
from manifest_checks import pod_specs
from monitoring_checks import monitor_errors, prometheus_operator_schema_errors
from strimzi_checks import strimzi_errors, strimzi_schema_errors


def container(docs, kind, name, index=0):
    return pod_specs(mc.find(docs, kind, name)[0])[0]["containers"][index]


def mistake_in(variant):
    """A decorator: the function breaks a fresh copy of `variant`, and calling it
    returns that copy."""

    def decorate(fn):
        def make():
            docs = rendered(variant)
            fn(docs)
            return docs

        make.__name__ = fn.__name__
        return make

    return decorate


mistake = mistake_in("base")
keda_mistake = mistake_in("overlays/keda")


@mistake
def misspelt_container_field(docs):
    c = container(docs, "StatefulSet", "consumer")
    c["readinesProbe"] = c.pop("readinessProbe")


@mistake
def string_replicas(docs):
    mc.find(docs, "Deployment", "logs")[0]["spec"]["replicas"] = "2"


@mistake
def misspelt_topic_field(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["spec"]["partition"] = 6


@mistake
def listener_without_tls(docs):
    del mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["tls"]


@mistake
def listener_type_typo(docs):
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["type"] = "internl"


@mistake
def listener_name_with_capitals(docs):
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["name"] = "Plain"


@mistake
def kafka_resources_outside_the_node_pool(docs):
    # Accepted by kafka.strimzi.io/v1beta2, gone from v1: resources belong to the pools.
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["resources"] = {"limits": {"memory": "2Gi"}}


@mistake
def misspelt_volume_field(docs):
    volume = mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["storage"]["volumes"][0]
    volume["deleteclaim"] = volume.pop("deleteClaim")


@mistake
def string_pool_replicas(docs):
    mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["replicas"] = "3"


@mistake
def unknown_node_role(docs):
    mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["roles"].append("zookeeper")


@mistake
def bad_memory_quantity(docs):
    mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["resources"]["limits"]["memory"] = "2GB"


@mistake
def zero_partitions(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["spec"]["partitions"] = 0


@mistake
def older_strimzi_api(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["apiVersion"] = "kafka.strimzi.io/v1beta2"


@mistake
def misspelt_metadata_field(docs):
    meta = mc.find(docs, "KafkaTopic", "votes")[0]["metadata"]
    meta["label"] = meta.pop("labels")


@mistake
def topic_name_with_a_capital(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["metadata"]["name"] = "Votes"


# Each caught by Strimzi's own CRD schema, of every Strimzi version checked;
# with the text the error must hold.
CAUGHT_BY_STRIMZIS_CRDS = {
    misspelt_topic_field: "'partition' was unexpected",
    listener_without_tls: "'tls' is a required property",
    listener_type_typo: "'internl' is not one of",
    listener_name_with_capitals: "does not match",
    kafka_resources_outside_the_node_pool: "'resources' was unexpected",
    misspelt_volume_field: "'deleteclaim' was unexpected",
    string_pool_replicas: "is not of type 'integer'",
    unknown_node_role: "'zookeeper' is not one of",
    bad_memory_quantity: "does not match",
    zero_partitions: "less than the minimum of 1",
    older_strimzi_api: "serves no KafkaTopic in kafka.strimzi.io/v1beta2",
    misspelt_metadata_field: "'label' was unexpected",
    topic_name_with_a_capital: "not a DNS-1123 subdomain",
}


@pytest.mark.parametrize("strimzi", STRIMZI_VERSIONS)
@pytest.mark.parametrize("make", list(CAUGHT_BY_STRIMZIS_CRDS), ids=lambda f: f.__name__)
def test_strimzis_crd_schema_reports_a_mistake(make, strimzi):
    errors = strimzi_schema_errors(make(), strimzi)
    assert any(CAUGHT_BY_STRIMZIS_CRDS[make] in e for e in errors), errors


@mistake
def config_strimzi_manages(docs):
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["config"]["listeners"] = "PLAINTEXT://:9092"


@mistake
def pool_without_roles(docs):
    del mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["roles"]


@mistake
def pool_without_cluster_label(docs):
    del mc.find(docs, "KafkaNodePool", "dual-role")[0]["metadata"]["labels"]["strimzi.io/cluster"]


@mistake
def pool_with_no_role(docs):
    mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["roles"] = []


@mistake
def jbod_volume_without_id(docs):
    del mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["storage"]["volumes"][0]["id"]


@mistake
def listener_on_the_prometheus_port(docs):
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["port"] = 9404


@mistake
def claim_without_size(docs):
    del mc.find(docs, "KafkaNodePool", "dual-role")[0]["spec"]["storage"]["volumes"][0]["size"]


@mistake
def topic_config_not_a_scalar(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["spec"]["config"]["retention.ms"] = {"value": -1}


@mistake
def topic_of_another_cluster(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["metadata"]["labels"]["strimzi.io/cluster"] = "other"


@mistake
def more_replicas_than_brokers(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["spec"]["replicas"] = 4


@mistake
def service_selector_typo(docs):
    mc.find(docs, "Service", "logs")[0]["spec"]["selector"] = {"app.kubernetes.io/name": "log"}


@mistake
def service_target_port_typo(docs):
    mc.find(docs, "Service", "ingress-http")[0]["spec"]["ports"][0]["targetPort"] = "htp"


@mistake
def missing_configmap(docs):
    container(docs, "Deployment", "logs")["envFrom"][0]["configMapRef"]["name"] = "votestream-settings"


@mistake
def missing_secret_key(docs):
    env = container(docs, "Deployment", "grafana")["env"]
    next(e for e in env if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "grafana-pasword"


@mistake
def hpa_on_missing_deployment(docs):
    mc.find(docs, "HorizontalPodAutoscaler", "consumer")[0]["spec"]["scaleTargetRef"]["name"] = "consumers"


@mistake
def ingress_to_missing_port(docs):
    ing = mc.find(docs, "Ingress", "votes-http")[0]
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": 80}


@mistake
def probe_on_unserved_path(docs):
    container(docs, "Deployment", "logs")["livenessProbe"]["httpGet"]["path"] = "/health"


@mistake
def probe_on_wrong_port(docs):
    container(docs, "StatefulSet", "consumer")["readinessProbe"]["httpGet"]["port"] = 8080


@mistake
def http_address_moved_but_not_the_port(docs):
    container(docs, "Deployment", "ingress-http")["env"].append(
        {"name": "HTTP_ADDR", "value": "0.0.0.0:9000"}
    )


@mistake
def variable_the_binary_does_not_read(docs):
    container(docs, "Deployment", "logs")["env"].append({"name": "KAFKA_BROKER", "value": "x:9092"})


@mistake
def expansion_before_definition(docs):
    env = container(docs, "StatefulSet", "consumer")["env"]
    env.insert(0, {"name": "MONGODB_URI", "value": "mongodb://$(MONGODB_USER)@mongodb:27017"})
    env.append({"name": "MONGODB_USER", "value": "votestream"})


@mistake
def unknown_subcommand(docs):
    container(docs, "StatefulSet", "consumer")["args"] = ["consume"]


@mistake
def moving_upstream_tag(docs):
    container(docs, "StatefulSet", "redis")["image"] = "redis:latest"


@mistake
def unpinned_project_image(docs):
    container(docs, "Deployment", "logs")["image"] = "ghcr.io/votestream/votestream"


@mistake
def writable_root_filesystem(docs):
    container(docs, "Deployment", "logs")["securityContext"]["readOnlyRootFilesystem"] = False


@mistake
def no_memory_limit(docs):
    del container(docs, "StatefulSet", "mongodb")["resources"]["limits"]["memory"]


@mistake
def short_grace_period(docs):
    pod_specs(mc.find(docs, "StatefulSet", "consumer")[0])[0]["terminationGracePeriodSeconds"] = 5


@mistake
def fewer_partitions_than_consumers(docs):
    mc.find(docs, "KafkaTopic", "votes")[0]["spec"]["partitions"] = 4


@mistake
def wrong_bootstrap_service(docs):
    cm = mc.find(docs, "ConfigMap", mc.generated_name(docs, "ConfigMap", "votestream-config"))[0]
    cm["data"]["KAFKA_BROKERS"] = "kafka:9092"


@mistake
def topic_setting_without_topic(docs):
    cm = mc.find(docs, "ConfigMap", mc.generated_name(docs, "ConfigMap", "votestream-config"))[0]
    cm["data"]["DLQ_TOPIC"] = "votes-dead"


CAUGHT_BY = {
    misspelt_container_field: lambda d: mc.k8s_schema_errors(d, "1.30.0"),
    string_replicas: lambda d: mc.k8s_schema_errors(d, "1.30.0"),
    misspelt_topic_field: strimzi_errors,
    listener_without_tls: strimzi_errors,
    config_strimzi_manages: strimzi_errors,
    pool_without_roles: strimzi_errors,
    pool_without_cluster_label: strimzi_errors,
    pool_with_no_role: strimzi_errors,
    jbod_volume_without_id: strimzi_errors,
    listener_on_the_prometheus_port: strimzi_errors,
    claim_without_size: strimzi_errors,
    topic_config_not_a_scalar: strimzi_errors,
    topic_of_another_cluster: strimzi_errors,
    more_replicas_than_brokers: strimzi_errors,
    service_selector_typo: mc.reference_errors,
    service_target_port_typo: mc.reference_errors,
    missing_configmap: mc.reference_errors,
    missing_secret_key: mc.reference_errors,
    hpa_on_missing_deployment: mc.reference_errors,
    ingress_to_missing_port: mc.reference_errors,
    probe_on_unserved_path: pod_checks.votestream_container_errors,
    probe_on_wrong_port: pod_checks.votestream_container_errors,
    http_address_moved_but_not_the_port: pod_checks.votestream_container_errors,
    variable_the_binary_does_not_read: pod_checks.votestream_container_errors,
    expansion_before_definition: pod_checks.votestream_container_errors,
    unknown_subcommand: pod_checks.votestream_container_errors,
    moving_upstream_tag: pod_checks.pod_hygiene_errors,
    unpinned_project_image: pod_checks.pod_hygiene_errors,
    writable_root_filesystem: pod_checks.pod_hygiene_errors,
    no_memory_limit: pod_checks.pod_hygiene_errors,
    short_grace_period: pod_checks.pod_hygiene_errors,
    fewer_partitions_than_consumers: mc.application_errors,
    wrong_bootstrap_service: mc.application_errors,
    topic_setting_without_topic: mc.application_errors,
}


@pytest.mark.parametrize("make", list(CAUGHT_BY), ids=lambda f: f.__name__)
def test_a_mistake_is_reported(make):
    assert CAUGHT_BY[make](make()) != []


def test_a_patch_selecting_nothing_is_reported():
    selects = {"patches": [{"target": {"kind": "KafkaNodePool", "name": "dual-role"}, "patch": "[]"}]}
    assert mc.patch_target_errors(selects, rendered("base")) == []
    # The name is a regular expression that kustomize anchors: a prefix selects nothing.
    typo = {"patches": [{"target": {"kind": "KafkaNodePool", "name": "dual"}, "patch": "[]"}]}
    assert mc.patch_target_errors(typo, rendered("base")) != []


def test_a_provider_reading_another_folder_is_reported(tmp_path):
    provisioning = tmp_path / "grafana-provisioning"
    shutil.copytree(ROOT / "grafana-provisioning", provisioning)
    (provisioning / "dashboards" / "dashboards.yaml").write_text(
        "apiVersion: 1\nproviders:\n  - name: x\n    type: file\n    options:\n      path: /var/lib/grafana/dashboards\n"
    )
    assert grafana_checks.grafana_errors(rendered("base"), provisioning) != []


def test_an_unlisted_provisioning_file_is_reported(tmp_path):
    provisioning = tmp_path / "grafana-provisioning"
    shutil.copytree(ROOT / "grafana-provisioning", provisioning)
    (provisioning / "dashboards" / "another.json").write_text("{}")
    assert grafana_checks.grafana_errors(rendered("base"), provisioning) != []


@pytest.mark.parametrize("url", ["$PROMETHEUS_ADDRESS", "prometheus-operated:9090"])
def test_a_prometheus_data_source_grafana_cannot_resolve_is_reported(url, tmp_path):
    provisioning = tmp_path / "grafana-provisioning"
    shutil.copytree(ROOT / "grafana-provisioning", provisioning)
    docs = rendered("base")
    if not url.startswith("$"):
        # The variable is there, but holds no URL.
        env = container(docs, "Deployment", "grafana")["env"]
        next(v for v in env if v["name"] == "PROMETHEUS_URL")["value"] = url
        url = "$PROMETHEUS_URL"
    (provisioning / "datasources" / "prometheus.yaml").write_text(
        f"apiVersion: 1\ndatasources:\n  - name: Prometheus\n    type: prometheus\n    uid: votestream-prometheus\n    url: {url}\n"
    )
    assert grafana_checks.grafana_errors(docs, provisioning) != []


def test_a_data_source_pointing_elsewhere_is_reported(tmp_path):
    provisioning = tmp_path / "grafana-provisioning"
    shutil.copytree(ROOT / "grafana-provisioning", provisioning)
    (provisioning / "datasources" / "redis.yaml").write_text(
        "apiVersion: 1\ndatasources:\n  - name: Redis\n    type: redis-datasource\n    url: redis://127.0.0.1:6379\n"
    )
    assert grafana_checks.grafana_errors(rendered("base"), provisioning) != []


# --- KEDA ---------------------------------------------------------------------------


def scaled(docs):
    return mc.find(docs, "ScaledObject", "consumer")[0]


def kafka_trigger(docs):
    return scaled(docs)["spec"]["triggers"][0]


@keda_mistake
def misspelt_scaled_object_field(docs):
    spec = scaled(docs)["spec"]
    spec["maxReplicas"] = spec.pop("maxReplicaCount")


@keda_mistake
def string_max_replica_count(docs):
    scaled(docs)["spec"]["maxReplicaCount"] = "6"


@keda_mistake
def boolean_trigger_metadata(docs):
    # YAML `false` unquoted: KEDA's metadata values are strings.
    kafka_trigger(docs)["metadata"]["allowIdleConsumers"] = False


@keda_mistake
def misspelt_autoscaler_config(docs):
    advanced = scaled(docs)["spec"]["advanced"]
    advanced["horizontalPodAutoScalerConfig"] = advanced.pop("horizontalPodAutoscalerConfig")


@keda_mistake
def trigger_without_type(docs):
    del kafka_trigger(docs)["type"]


@keda_mistake
def older_keda_api(docs):
    scaled(docs)["apiVersion"] = "keda.sh/v1beta1"


# Each caught by KEDA's own CRD schema, of every KEDA version checked; with the
# text the error must hold.
CAUGHT_BY_KEDAS_CRD = {
    misspelt_scaled_object_field: "'maxReplicas' was unexpected",
    string_max_replica_count: "'6' is not of type 'integer'",
    boolean_trigger_metadata: "False is not of type 'string'",
    misspelt_autoscaler_config: "'horizontalPodAutoScalerConfig' was unexpected",
    trigger_without_type: "'type' is a required property",
    older_keda_api: "serves no ScaledObject in keda.sh/v1beta1",
}


@pytest.mark.parametrize("keda", KEDA_VERSIONS)
@pytest.mark.parametrize("make", list(CAUGHT_BY_KEDAS_CRD), ids=lambda f: f.__name__)
def test_kedas_crd_schema_reports_a_mistake(make, keda):
    errors = keda_schema_errors(make(), keda)
    assert any(CAUGHT_BY_KEDAS_CRD[make] in e for e in errors), errors


@keda_mistake
def misspelt_trigger_metadata(docs):
    metadata = kafka_trigger(docs)["metadata"]
    metadata["consumergroup"] = metadata.pop("consumerGroup")


@keda_mistake
def lag_threshold_not_a_number(docs):
    kafka_trigger(docs)["metadata"]["lagThreshold"] = "10k"


@keda_mistake
def unknown_offset_reset_policy(docs):
    kafka_trigger(docs)["metadata"]["offsetResetPolicy"] = "oldest"


@keda_mistake
def idle_consumers_with_partitions_with_lag(docs):
    kafka_trigger(docs)["metadata"]["allowIdleConsumers"] = "true"


@keda_mistake
def scaled_object_on_missing_deployment(docs):
    scaled(docs)["spec"]["scaleTargetRef"]["name"] = "consumers"


@keda_mistake
def cpu_autoscaler_kept_beside_keda(docs):
    docs.append(copy.deepcopy(mc.find(rendered("base"), "HorizontalPodAutoscaler", "consumer")[0]))


@keda_mistake
def more_consumers_than_partitions(docs):
    scaled(docs)["spec"]["maxReplicaCount"] = 8


@keda_mistake
def another_consumer_group(docs):
    kafka_trigger(docs)["metadata"]["consumerGroup"] = "votestream"


@keda_mistake
def bootstrap_without_namespace(docs):
    # Resolves in the consumer's namespace, not in KEDA's.
    kafka_trigger(docs)["metadata"]["bootstrapServers"] = "votestream-kafka-bootstrap:9092"


@keda_mistake
def lag_counted_from_the_end(docs):
    # The consumer starts a new group at the earliest offset, so that is its lag.
    kafka_trigger(docs)["metadata"]["offsetResetPolicy"] = "latest"


# Mistakes KEDA's CRD lets through (the trigger's metadata is a map of strings)
# and the checks of keda_checks.py report.
CAUGHT_BY_KEDA_CHECKS = [
    misspelt_trigger_metadata,
    lag_threshold_not_a_number,
    unknown_offset_reset_policy,
    idle_consumers_with_partitions_with_lag,
    scaled_object_on_missing_deployment,
    cpu_autoscaler_kept_beside_keda,
    more_consumers_than_partitions,
    another_consumer_group,
    bootstrap_without_namespace,
    lag_counted_from_the_end,
]


@pytest.mark.parametrize("make", CAUGHT_BY_KEDA_CHECKS, ids=lambda f: f.__name__)
def test_a_scaled_object_mistake_is_reported(make):
    docs = make()
    assert all(keda_schema_errors(docs, v) == [] for v in KEDA_VERSIONS), "the CRD alone catches it"
    assert keda_errors(docs) != []


def test_more_consumers_than_partitions_is_reported_by_the_settings_check_too():
    assert mc.application_errors(more_consumers_than_partitions()) != []


# --- The Prometheus Operator --------------------------------------------------------


def pod_monitor(docs, name="consumer"):
    return mc.find(docs, "PodMonitor", name)[0]


# A PrometheusRule as the Prometheus Operator takes it, for the schema helper.
SAMPLE_RULE = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "votestream", "namespace": "votestream", "labels": {"app": "votestream"}},
    "spec": {
        "groups": [
            {
                "name": "votestream",
                "rules": [
                    {
                        "alert": "VotestreamDeadLetters",
                        "expr": "increase(votestream_consumer_dlq_records_total[5m]) > 0",
                        "for": "1m",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "Records went to votes.dlq"},
                    }
                ],
            }
        ]
    },
}


def with_rule(change):
    rule = copy.deepcopy(SAMPLE_RULE)
    change(rule["spec"]["groups"][0]["rules"][0])
    return rendered("base") + [rule]


@mistake
def misspelt_pod_monitor_field(docs):
    spec = pod_monitor(docs)["spec"]
    spec["podMetricEndpoints"] = spec.pop("podMetricsEndpoints")


@mistake
def interval_in_words(docs):
    pod_monitor(docs)["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"


@mistake
def numeric_monitor_port(docs):
    pod_monitor(docs)["spec"]["podMetricsEndpoints"][0]["port"] = 9100


@mistake
def pod_monitor_without_selector(docs):
    del pod_monitor(docs)["spec"]["selector"]


def misspelt_rule_field():
    return with_rule(lambda rule: rule.update(expresion=rule.pop("expr")))


def numeric_rule_duration():
    return with_rule(lambda rule: rule.update({"for": 5}))


# Each caught by the Prometheus Operator's own CRD schemas; with the text the
# error must hold.
CAUGHT_BY_PROMETHEUS_OPERATORS_CRDS = {
    misspelt_pod_monitor_field: "'podMetricEndpoints' was unexpected",
    interval_in_words: "does not match",
    numeric_monitor_port: "9100 is not of type 'string'",
    pod_monitor_without_selector: "'selector' is a required property",
    misspelt_rule_field: "'expresion' was unexpected",
    numeric_rule_duration: "5 is not of type 'string'",
}


@pytest.mark.parametrize("version", PROMETHEUS_OPERATOR_VERSIONS)
@pytest.mark.parametrize("make", list(CAUGHT_BY_PROMETHEUS_OPERATORS_CRDS), ids=lambda f: f.__name__)
def test_the_prometheus_operators_crd_schemas_report_a_mistake(make, version):
    errors = prometheus_operator_schema_errors(make(), version)
    assert any(CAUGHT_BY_PROMETHEUS_OPERATORS_CRDS[make] in e for e in errors), errors


@pytest.mark.parametrize("version", PROMETHEUS_OPERATOR_VERSIONS)
def test_a_sound_prometheus_rule_passes_the_schema_helper(version):
    assert prometheus_operator_schema_errors(with_rule(lambda rule: None), version) == []


@mistake
def pod_monitor_selector_typo(docs):
    pod_monitor(docs)["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "consumers"


@mistake
def pod_monitor_on_undeclared_port(docs):
    pod_monitor(docs, "logs")["spec"]["podMetricsEndpoints"][0]["port"] = "metrics"


@mistake
def pod_monitor_on_another_path(docs):
    pod_monitor(docs, "ingress")["spec"]["podMetricsEndpoints"][0]["path"] = "/healthz"


@mistake
def process_not_scraped(docs):
    docs.remove(pod_monitor(docs, "logs"))


@mistake
def process_scraped_twice(docs):
    twice = copy.deepcopy(pod_monitor(docs))
    twice["metadata"]["name"] = "votestream"
    twice["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/part-of": "votestream"}}
    docs.append(twice)


@pytest.mark.parametrize(
    "make",
    [
        pod_monitor_selector_typo,
        pod_monitor_on_undeclared_port,
        pod_monitor_on_another_path,
        process_not_scraped,
        process_scraped_twice,
    ],
    ids=lambda f: f.__name__,
)
def test_a_scraping_mistake_is_reported(make):
    assert monitor_errors(make()) != []


# --- PodDisruptionBudgets -----------------------------------------------------------


@mistake
def budget_selector_typo(docs):
    mc.find(docs, "PodDisruptionBudget", "consumer")[0]["spec"]["selector"]["matchLabels"] = {
        "app.kubernetes.io/name": "consumers"
    }


@mistake
def budget_that_blocks_every_eviction(docs):
    spec = mc.find(docs, "PodDisruptionBudget", "logs")[0]["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = 2


@mistake
def two_budgets_on_one_pod(docs):
    twice = copy.deepcopy(mc.find(docs, "PodDisruptionBudget", "consumer")[0])
    twice["metadata"]["name"] = "consumer-too"
    docs.append(twice)


@mistake
def deployment_without_budget(docs):
    docs.remove(mc.find(docs, "PodDisruptionBudget", "ingress-http")[0])


@pytest.mark.parametrize(
    "make",
    [
        budget_selector_typo,
        budget_that_blocks_every_eviction,
        two_budgets_on_one_pod,
        deployment_without_budget,
    ],
    ids=lambda f: f.__name__,
)
def test_a_disruption_budget_mistake_is_reported(make):
    assert mc.disruption_budget_errors(make()) != []


# --- what keeps the deployment private (security_checks.py) ------------------------


def _secret(docs, base_name):
    return mc.find(docs, "Secret", mc.generated_name(docs, "Secret", base_name))[0]


def _set_secret(docs, base_name, key, value):
    _secret(docs, base_name)["data"][key] = base64.b64encode(value.encode()).decode()


def _policy(docs, name):
    return mc.find(docs, "NetworkPolicy", name)[0]


@mistake
def admin_port_published(docs):
    svc = mc.find(docs, "Service", "ingress-http")[0]
    svc["spec"]["ports"].append({"name": "admin", "port": 9090, "targetPort": "admin"})


@mistake
def metrics_port_behind_the_load_balancer(docs):
    mc.find(docs, "Service", "logs")[0]["spec"]["ports"][0]["targetPort"] = "admin"


@mistake
def probe_on_the_public_port(docs):
    container(docs, "Deployment", "ingress-http")["readinessProbe"]["httpGet"]["port"] = "http"


@mistake
def no_admin_address(docs):
    env = container(docs, "Deployment", "logs")["env"]
    env[:] = [e for e in env if e["name"] != "ADMIN_ADDR"]


@mistake
def scraping_the_public_port(docs):
    mc.find(docs, "PodMonitor", "logs")[0]["spec"]["podMetricsEndpoints"][0]["port"] = "https"


@mistake
def default_deny_dropped(docs):
    # Without it, a pod that no other policy selects is open to everyone.
    docs.remove(_policy(docs, "default-deny"))
    docs.remove(_policy(docs, "mongodb"))


@mistake
def redis_policy_dropped(docs):
    # With the default deny, nobody reaches Redis any more.
    docs.remove(_policy(docs, "redis"))


@mistake
def consumer_may_reach_anything(docs):
    _policy(docs, "consumer")["spec"]["egress"].append({})


@mistake
def mongodb_open_to_anyone(docs):
    del _policy(docs, "mongodb")["spec"]["ingress"][0]["from"]


@mistake
def kafka_listener_open_to_every_pod(docs):
    del mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]


@mistake
def prometheus_cannot_scrape_the_consumer(docs):
    del _policy(docs, "consumer")["spec"]["ingress"]


@mistake
def no_dns(docs):
    docs.remove(_policy(docs, "dns"))


@mistake
def unauthenticated_listener(docs):
    del mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["authentication"]


@mistake
def no_acls_enforced(docs):
    del mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["authorization"]


@mistake
def clients_without_tls(docs):
    cm = mc.find(docs, "ConfigMap", mc.generated_name(docs, "ConfigMap", "votestream-config"))[0]
    cm["data"]["KAFKA_OPTIONS"] = cm["data"]["KAFKA_OPTIONS"].replace("SASL_SSL", "SASL_PLAINTEXT")


@mistake
def ingress_may_read_votes(docs):
    mc.find(docs, "KafkaUser", "ingress")[0]["spec"]["authorization"]["acls"][0]["operations"].append("Read")


@mistake
def consumer_logs_in_as_the_ingress(docs):
    volumes = pod_specs(mc.find(docs, "StatefulSet", "consumer")[0])[0]["volumes"]
    kafka = next(v for v in volumes if v["name"] == "kafka-credentials")
    kafka["secret"]["secretName"] = mc.generated_name(docs, "Secret", "kafka-ingress")


@mistake
def kafka_password_out_of_step(docs):
    _set_secret(docs, "kafka-consumer", "password", "change-me-another")


@mistake
def real_password_committed(docs):
    _set_secret(docs, "votestream-stores", "redis-url", "redis://votestream:hunter2@redis:6379\n")


@mistake
def redis_user_password_out_of_step(docs):
    acl = base64.b64decode(_secret(docs, "redis-users")["data"]["users.acl"]).decode()
    _set_secret(docs, "redis-users", "users.acl", acl.replace(">change-me-redis-grafana", ">change-me-other"))


@mistake
def redis_default_user_may_do_everything(docs):
    acl = base64.b64decode(_secret(docs, "redis-users")["data"]["users.acl"]).decode()
    _set_secret(docs, "redis-users", "users.acl", acl.replace("-@all +ping", "~* +@all"))


@mistake
def private_key_committed(docs):
    _set_secret(docs, "votestream-tls", "tls.key", "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n")


@mistake
def mongodb_uri_of_another_user(docs):
    _set_secret(docs, "votestream-stores", "mongodb-uri", "mongodb://admin:change-me-mongodb@mongodb:27017/\n")


@keda_mistake
def keda_scaler_without_credentials(docs):
    del mc.find(docs, "ScaledObject", "consumer")[0]["spec"]["triggers"][0]["authenticationRef"]


@keda_mistake
def keda_shut_out_of_kafka(docs):
    mc.find(docs, "Kafka", "votestream")[0]["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"].pop()


SECURITY_CAUGHT_BY = {
    admin_port_published: security_checks.exposure_errors,
    metrics_port_behind_the_load_balancer: security_checks.exposure_errors,
    probe_on_the_public_port: pod_checks.votestream_container_errors,
    no_admin_address: pod_checks.votestream_container_errors,
    scraping_the_public_port: monitor_errors,
    default_deny_dropped: security_checks.network_errors,
    redis_policy_dropped: security_checks.network_errors,
    consumer_may_reach_anything: security_checks.network_errors,
    mongodb_open_to_anyone: security_checks.network_errors,
    kafka_listener_open_to_every_pod: security_checks.network_errors,
    prometheus_cannot_scrape_the_consumer: security_checks.network_errors,
    no_dns: security_checks.network_errors,
    unauthenticated_listener: security_checks.kafka_security_errors,
    no_acls_enforced: security_checks.kafka_security_errors,
    clients_without_tls: security_checks.kafka_security_errors,
    ingress_may_read_votes: security_checks.kafka_security_errors,
    consumer_logs_in_as_the_ingress: security_checks.kafka_security_errors,
    kafka_password_out_of_step: security_checks.kafka_security_errors,
    real_password_committed: security_checks.secret_errors,
    redis_user_password_out_of_step: security_checks.secret_errors,
    redis_default_user_may_do_everything: security_checks.secret_errors,
    private_key_committed: security_checks.secret_errors,
    mongodb_uri_of_another_user: security_checks.secret_errors,
    keda_scaler_without_credentials: security_checks.kafka_security_errors,
    keda_shut_out_of_kafka: security_checks.network_errors,
}


@pytest.mark.parametrize("make", list(SECURITY_CAUGHT_BY), ids=lambda f: f.__name__)
def test_a_security_mistake_is_reported(make):
    assert SECURITY_CAUGHT_BY[make](make()) != []


def test_a_data_source_password_grafana_lacks_is_reported():
    docs = rendered("base")
    env = container(docs, "Deployment", "grafana")["env"]
    env[:] = [e for e in env if e["name"] != "REDIS_PASSWORD"]
    assert grafana_checks.grafana_errors(docs, ROOT / "grafana-provisioning") != []
