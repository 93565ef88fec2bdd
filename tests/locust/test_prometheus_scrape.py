"""What the real Prometheus of the pipeline run (pipeline_run.py) scraped
and evaluated: every votestream metric that the dashboards and the alerting
rules name was among the series the processes served (promtool's unit tests
run the rules on series they write themselves, so a misspelt name would pass
there), the rules of deploy/prometheus/alerts.yml evaluate against the real
series without error, and a healthy run fires none of them."""

from __future__ import annotations

import json
import re
import urllib.request

import yaml

from pipeline_run import ROOT, PipelineRun, prometheus_query

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bvotestream_[a-z0-9_]+")


def get(run: PipelineRun, path: str) -> dict:
    with urllib.request.urlopen(f"{run.prometheus}{path}", timeout=10) as response:
        return json.load(response)["data"]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def named_metrics() -> dict[str, str]:
    """Each metric name a dashboard target or an alerting rule uses -> where."""
    named = {}
    for path in sorted((ROOT / "grafana-provisioning" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                for name in METRIC.findall(target.get("expr", "")):
                    named[name] = f"{path.name}: {panel['title']}"
    for rule in alert_rules():
        for name in METRIC.findall(rule["expr"]):
            named[name] = f"alerts.yml: {rule['alert']}"
    return named


def test_every_metric_the_dashboards_and_alerts_name_was_scraped(pipeline_run: PipelineRun):
    assert pipeline_run.counted > 0, "votes flowed"
    scraped = set(get(pipeline_run, "/api/v1/label/__name__/values"))
    named = named_metrics()
    assert len(named) >= 10, named
    missing = {name: where for name, where in named.items() if name not in scraped}
    assert not missing, f"never served by the pipeline: {missing}"


def test_every_process_was_scraped(pipeline_run: PipelineRun):
    up = prometheus_query(pipeline_run, "up", at=pipeline_run.scraped_at)["result"]
    assert {s["metric"]["job"]: s["value"][1] for s in up} == {"ingress": "1", "consumer": "1", "logs": "1"}


def test_the_alerting_rules_evaluate_against_the_real_series(pipeline_run: PipelineRun):
    rules = [r for group in get(pipeline_run, "/api/v1/rules?type=alert")["groups"] for r in group["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"


def test_a_healthy_run_fires_no_alert(pipeline_run: PipelineRun):
    firing = prometheus_query(pipeline_run, 'ALERTS{alertstate="firing"}', at=pipeline_run.scraped_at)["result"]
    assert firing == [], firing
