"""Each check, fed the base with one mistake, reports that mistake: the green
results of test_manifests.py mean something."""

from __future__ import annotations

import shutil

import pytest

import grafana_checks
import manifest_checks as mc
import pod_checks
from variants import STRIMZI_VERSIONS, rendered
from contract import ROOT
from manifest_checks import pod_specs
from strimzi_checks import strimzi_errors, strimzi_schema_errors


def container(docs, kind, name, index=0):
    return pod_specs(mc.find(docs, kind, name)[0])[0]["containers"][index]


def mistake(fn):
    """A function that breaks a fresh copy of the base, returning it."""

    def make():
        docs = rendered("base")
        fn(docs)
        return docs

    make.__name__ = fn.__name__
    return make


@mistake
def misspelt_container_field(docs):
    c = container(docs, "Deployment", "consumer")
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
    env = container(docs, "Deployment", "consumer")["env"]
    next(e for e in env if e["name"] == "REDIS_URL")["valueFrom"]["secretKeyRef"]["key"] = "REDIS_URI"


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
    container(docs, "Deployment", "consumer")["readinessProbe"]["httpGet"]["port"] = 8080


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
    env = container(docs, "Deployment", "consumer")["env"]
    env.insert(0, env.pop(next(i for i, e in enumerate(env) if e["name"] == "MONGODB_URI")))


@mistake
def unknown_subcommand(docs):
    container(docs, "Deployment", "consumer")["args"] = ["consume"]


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
    pod_specs(mc.find(docs, "Deployment", "consumer")[0])[0]["terminationGracePeriodSeconds"] = 5


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
