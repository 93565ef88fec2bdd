"""The Cloud Run service of the logs app (deploy/cloudrun/*.yaml, and a sample
kept in fixtures/ so these checks run before that file exists)."""

from __future__ import annotations

import copy

import pytest
import yaml

from cloudrun_checks import cloudrun_errors
from variants import K8S_VERSIONS
from contract import ROOT

HERE = ROOT / "tests" / "deploy"
FIXTURE = HERE / "fixtures" / "cloudrun-service.yaml"
MANIFESTS = sorted((ROOT / "deploy" / "cloudrun").glob("*.y*ml")) + [FIXTURE]


def load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} holds no document"
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_cloud_run_service_is_well_formed(path, version):
    for doc in load(path):
        assert cloudrun_errors(doc, version) == []


def sample():
    return copy.deepcopy(load(FIXTURE)[0])


def logs_container(doc):
    return doc["spec"]["template"]["spec"]["containers"][0]


def env(doc, name):
    return next(e for e in logs_container(doc)["env"] if e["name"] == name)


def clear_database_url(doc):
    var = env(doc, "MONGODB_URI")
    del var["valueFrom"]
    var["value"] = "mongodb://user:password@mongodb:27017/"


MISTAKES = {
    "not a Knative service": lambda d: d.update(apiVersion="apps/v1"),
    "misspelt container field": lambda d: logs_container(d).update(envv=[]),
    "misspelt revision field": lambda d: d["spec"]["template"]["spec"].update(containerConcurency=80),
    "another port": lambda d: logs_container(d)["ports"][0].update(containerPort=8081),
    "PORT set by hand": lambda d: logs_container(d)["env"].append({"name": "PORT", "value": "80"}),
    "database URL in clear": lambda d: clear_database_url(d),
    "secret version not a number": lambda d: env(d, "REDIS_URL")["valueFrom"]["secretKeyRef"].update(
        key="v1"
    ),
    "secret without a name": lambda d: env(d, "REDIS_URL")["valueFrom"]["secretKeyRef"].pop("name"),
    "unknown variable": lambda d: logs_container(d)["env"].append({"name": "MONGO_URL", "value": "x"}),
    "another image": lambda d: logs_container(d).update(image="nginx:1.27.0"),
    "moving tag": lambda d: logs_container(d).update(image="ghcr.io/votestream/votestream:latest"),
    "not the logs app": lambda d: logs_container(d).update(args=["consumer"]),
    "probe on an unserved path": lambda d: logs_container(d)["livenessProbe"]["httpGet"].update(
        path="/health"
    ),
    "name too long for Cloud Run": lambda d: d["metadata"].update(name="x" * 50),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_a_cloud_run_mistake_is_reported(name):
    doc = sample()
    MISTAKES[name](doc)
    assert cloudrun_errors(doc, K8S_VERSIONS[0]) != []
