"""The Prometheus files of deploy/prometheus and the base's PrometheusRule,
checked with promtool, built from the same Prometheus module as the local
stack's Prometheus (`scripts/stack install prometheus`, once, into the cache):
the rules are valid and pass their unit tests (alerts_test.yml), the alerts
the runbook is written against all exist and fire in a test, the local scrape
configuration is valid and scrapes every process at its default port, and
the PrometheusRule holds exactly the plain file's rules."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

import manifest_checks as mc
from contract import ROOT, SUBCOMMANDS
from tools import ToolMissing, cache_dir

PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
# deploy/RUNBOOK.md has a section for each of these names.
ALERT_NAMES = {
    "VotestreamConsumerLagGrowing",
    "VotestreamCountingBehind",
    "VotestreamDeadLetters",
    "VotestreamSinkDown",
    "VotestreamEndToEndSlow",
    "VotestreamIngressRefusalsSpiking",
    "VotestreamIngressErrors",
}


@lru_cache(maxsize=None)
def promtool() -> Path:
    """promtool of the Prometheus module scripts/prometheus.version names,
    built by scripts/stack when missing."""
    version = (ROOT / "scripts" / "prometheus.version").read_text().strip()
    binary = cache_dir() / f"prometheus-{version}" / "promtool"
    if not binary.is_file():
        out = subprocess.run(
            [str(ROOT / "scripts" / "stack"), "install", "prometheus"],
            env={**os.environ, "STACK_CACHE": str(cache_dir())},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if out.returncode != 0 or not binary.is_file():
            raise ToolMissing(f"`scripts/stack install prometheus` did not build {binary}:\n{out.stderr[-3000:]}")
    return binary


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool()), *args], capture_output=True, text=True, timeout=120)


def rules(groups: list[dict]) -> list[dict]:
    return [rule for group in groups for rule in group["rules"]]


def test_the_alert_rules_are_valid():
    out = run_promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_pass_their_unit_tests():
    out = run_promtool("test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_the_runbook_names_exists_is_described_and_fires_in_a_unit_test():
    alerts = {r["alert"]: r for r in rules(yaml.safe_load(ALERTS.read_text())["groups"]) if "alert" in r}
    assert set(alerts) == ALERT_NAMES
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), name
    fired = {
        case["alertname"]
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == ALERT_NAMES, f"no unit test where these fire: {ALERT_NAMES - fired}"


def test_the_local_scrape_configuration_is_valid_and_loads_the_rules():
    out = run_promtool("check", "config", str(SCRAPE_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "alerts.yml" in yaml.safe_load(SCRAPE_CONFIG.read_text())["rule_files"]


def test_the_local_prometheus_scrapes_each_process_at_its_default_port():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    targets = {
        job["job_name"]: {t for static in job["static_configs"] for t in static["targets"]}
        for job in config["scrape_configs"]
    }
    assert targets == {name: {f"127.0.0.1:{sub['http_port']}"} for name, sub in SUBCOMMANDS.items()}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert "/metrics" in SUBCOMMANDS[job["job_name"]]["paths"]


def test_the_prometheus_rule_of_the_base_holds_the_plain_rules(base, tmp_path):
    (rule,) = mc.find(base, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    plain = yaml.safe_load(ALERTS.read_text())["groups"]
    assert rule["spec"]["groups"] == plain, (
        "deploy/k8s/base/prometheus-rules.yaml: copy the groups of deploy/prometheus/alerts.yml"
    )
    # The Operator hands spec to Prometheus as a rules file: promtool reads it as one.
    as_file = tmp_path / "prometheus-rule.yml"
    as_file.write_text(yaml.safe_dump(rule["spec"]))
    out = run_promtool("check", "rules", str(as_file))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("broken", ["a typo", "an alert renamed"])
def test_promtool_reports_a_broken_rule(broken, tmp_path):
    text = ALERTS.read_text()
    text = (
        text.replace("histogram_quantile(0.99,", "histogram_quantile(0.99", 1)
        if broken == "a typo"
        else text.replace("VotestreamSinkDown", "VotestreamSinkIsDown")
    )
    (tmp_path / "alerts.yml").write_text(text)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    out = run_promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert out.returncode != 0, out.stdout
