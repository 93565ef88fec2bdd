"""The Grafana provisioning: every dashboard is valid dashboard JSON whose
data sources are provisioned; every panel's Redis command, run against the
real Redis after the pipeline run of conftest.py, returns the data the panel
charts; and every panel's PromQL, run through the HTTP API of the real
Prometheus that scraped that run, returns numbers.

The redis-datasource plugin's query model (`type`, `command`, `keyName`,
`field`, ...) and the frames it answers with (HGETALL: string columns `Field`
and `Value`; GET and HGET: one `Value`, a number when it parses as one;
XRANGE: `$streamId`, `$time` and one column per entry field, over the
dashboard's time range) are those of the plugin's source, version 2.x.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import yaml

from pipeline_run import ROOT, PipelineRun, prometheus_query

PROVISIONING = ROOT / "grafana-provisioning"
DASHBOARDS = sorted((PROVISIONING / "dashboards").glob("*.json"))
# Panel types of Grafana 11's core plugins that this project may use.
PANEL_TYPES = {"stat", "piechart", "timeseries", "barchart", "bargauge", "table", "gauge", "text", "row"}
# Commands of the plugin's "Redis commands" query type that this test can run.
COMMANDS = {"get", "hget", "hgetall", "xrange"}
# Each key of DESIGN.md's contract that Grafana is meant to chart.
CHARTED_KEYS = {
    "votes:total",
    "votes:received",
    "voters:total",
    "votes:by_band",
    "votes:by_album",
    "votes:by_route",
    "rank:avg_by_album",
    "votes:timeline",
    "contest:status",
}
# The outcomes of the votes each timeline entry counts, and the contest's statuses.
OUTCOMES = {"counted", "changed", "duplicate", "late"}
STATUSES = {"not_open", "open", "closed", "final"}


def datasources() -> dict[str, str]:
    """uid -> type of every provisioned data source."""
    found = {}
    for f in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            found[ds["uid"]] = ds["type"]
    return found


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(datasource_type: str) -> list[tuple[str, dict, dict]]:
    """(test id, dashboard, panel) for every panel that queries a data source of that type."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            if panel.get("targets") and (panel.get("datasource") or {}).get("type") == datasource_type:
                found.append((f"{path.stem}:{panel['title']}", dashboard, panel))
    return found


REDIS_QUERIES = queries("redis-datasource")
PROMETHEUS_QUERIES = queries("prometheus")


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_the_dashboard_is_valid_grafana_dashboard_json(path: Path):
    dashboard = json.loads(path.read_text())
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard.get("uid", "")), "a uid Grafana accepts"
    assert dashboard.get("title")
    assert isinstance(dashboard.get("schemaVersion"), int)
    assert dashboard.get("refresh"), "refreshes live"
    assert dashboard.get("time", {}).get("from"), "has a default time range"
    all_panels = panels(dashboard)
    assert all_panels, "has panels"
    ids = [p.get("id") for p in all_panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), f"unique panel ids: {ids}"
    cells = set()
    for panel in all_panels:
        name = panel.get("title")
        assert name, f"panel {panel.get('id')} has a title"
        assert panel.get("type") in PANEL_TYPES, f"{name}: panel type {panel.get('type')}"
        pos = panel.get("gridPos", {})
        assert all(isinstance(pos.get(k), int) for k in "hwxy"), f"{name}: gridPos {pos}"
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{name}: {pos}"
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{name} overlaps another panel"
        cells |= mine
        ref_ids = [t.get("refId") for t in panel.get("targets", [])]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), f"{name}: refIds {ref_ids}"


def test_every_data_source_reference_is_provisioned():
    provisioned = datasources()
    assert provisioned, "grafana-provisioning/datasources provisions a data source"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if ref is None:
                    continue
                assert isinstance(ref, dict), f"{panel['title']}: a {{type, uid}} reference, not {ref!r}"
                assert provisioned.get(ref.get("uid")) == ref.get("type"), (
                    f"{path.name} / {panel['title']}: {ref} is not among the provisioned {provisioned}"
                )


def test_the_dashboards_chart_every_counter_of_the_contract():
    keys = {t.get("keyName") for _, _, panel in REDIS_QUERIES for t in panel["targets"]}
    assert CHARTED_KEYS <= keys, f"not charted: {CHARTED_KEYS - keys}"


def test_the_outcomes_of_each_batch_are_charted_over_time():
    charted = [
        fields_used(panel)
        for _, _, panel in REDIS_QUERIES
        for t in panel["targets"]
        if (t.get("command"), t.get("keyName")) == ("xrange", "votes:timeline")
    ]
    assert any(OUTCOMES <= fields for fields in charted), f"no timeline panel charts {sorted(OUTCOMES)}: {charted}"


def test_the_contest_status_is_shown_by_name():
    shown = [
        (panel, value_mappings(panel))
        for _, _, panel in REDIS_QUERIES
        for t in panel["targets"]
        if (t.get("command"), t.get("keyName"), t.get("field")) == ("hget", "contest:status", "status")
    ]
    assert shown, "a panel shows HGET contest:status status"
    for panel, mappings in shown:
        assert set(mappings) == STATUSES, f"{panel['title']}: maps {sorted(mappings)}"
        assert panel["options"]["reduceOptions"]["fields"] == "/^Value$/", f"{panel['title']}: shows the string value"


def test_the_provider_reads_the_folder_the_dashboards_are_mounted_in():
    for f in sorted((PROVISIONING / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(f.read_text())["providers"]:
            assert provider["type"] == "file"
            assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"


def test_every_panel_queries_redis_or_prometheus():
    every = [q[0] for q in queries("redis-datasource") + queries("prometheus")]
    assert sorted(every) == sorted(
        f"{p.stem}:{panel['title']}" for p in DASHBOARDS for panel in panels(json.loads(p.read_text())) if panel.get("targets")
    )
    assert PROMETHEUS_QUERIES, "a dashboard charts the Prometheus metrics"


@pytest.mark.parametrize(("dashboard", "panel"), [q[1:] for q in REDIS_QUERIES], ids=[q[0] for q in REDIS_QUERIES])
def test_the_panel_query_returns_the_data_it_charts(dashboard, panel, pipeline_run: PipelineRun, redis_client):
    assert pipeline_run.counted > 0, "votes flowed"
    mapped = value_mappings(panel)
    for target in panel["targets"]:
        assert target.get("type", "command") == "command" and not target.get("query"), "a Redis command query"
        command, key, field = target.get("command"), target.get("keyName"), target.get("field")
        assert command in COMMANDS and key, f"{panel['title']}: command {command!r} on key {key!r}"
        assert (command == "hget") == bool(field), f"{panel['title']}: {command} with field {field!r}"
        frame = run_query(redis_client, pipeline_run.prefix + key, command, dashboard, field)
        assert frame and all(frame.values()), f"{panel['title']}: {command.upper()} {key} returned nothing"
        for name in fields_used(panel):
            assert name in frame, f"{panel['title']}: uses field {name!r}; the query returns {sorted(frame)}"
        for name in charted_fields(frame):
            # A panel that maps values to names shows names; any other charts numbers.
            bad = [v for v in frame[name] if (v not in mapped if mapped else not is_number(v))]
            wanted = "values it maps" if mapped else "numbers"
            assert not bad, f"{panel['title']}: {name} is charted but holds {bad[:5]}, not {wanted}"


@pytest.mark.parametrize(("dashboard", "panel"), [q[1:] for q in PROMETHEUS_QUERIES], ids=[q[0] for q in PROMETHEUS_QUERIES])
def test_the_prometheus_panel_query_returns_numbers(dashboard, panel, pipeline_run: PipelineRun):
    assert pipeline_run.counted > 0, "votes flowed"
    for target in panel["targets"]:
        assert target.get("datasource") == panel["datasource"], f"{panel['title']}: one data source per panel"
        expr = promql(target["expr"])
        data = prometheus_query(pipeline_run, expr, at=pipeline_run.scraped_at)
        assert data["resultType"] == "vector", f"{panel['title']}: {expr} gave a {data['resultType']}"
        assert data["result"], f"{panel['title']}: {expr} returned no series"
        values = [float(series["value"][1]) for series in data["result"]]
        assert all(math.isfinite(v) for v in values), f"{panel['title']}: {expr} returned {data['result']}"


def rate_interval() -> str:
    """Grafana's least $__rate_interval: four scrape intervals of the data
    source (jsonData.timeInterval)."""
    for f in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            if ds["type"] == "prometheus":
                return f"{4 * relative_ms('now-' + ds['jsonData']['timeInterval']) // 1000}s"
    raise AssertionError("no Prometheus data source")


def promql(expr: str) -> str:
    """A target's expression as Grafana sends it: its variables replaced."""
    expr = expr.replace("$__rate_interval", rate_interval())
    assert "$" not in expr, f"a Grafana variable this test does not replace: {expr}"
    return expr


def run_query(client, key: str, command: str, dashboard: dict, field: str | None = None) -> dict[str, list]:
    """The columns of the frame the plugin makes from the command's answer."""
    if command in ("get", "hget"):
        value = client.get(key) if command == "get" else client.hget(key, field)
        return {"Value": [] if value is None else [value]}
    if command == "hgetall":
        pairs = client.hgetall(key)
        return {"Field": list(pairs), "Value": list(pairs.values())}
    # xrange without start/end: the dashboard's time range, "now-<n><unit>" to now.
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - relative_ms(dashboard["time"]["from"])
    entries = client.xrange(key, f"{start_ms}-0", f"{now_ms}-0")
    frame: dict[str, list] = {"$streamId": [i for i, _ in entries], "$time": [i.split("-")[0] for i, _ in entries]}
    for _, fields in entries:
        for name, value in fields.items():
            frame.setdefault(name, []).append(value)
    return frame


def relative_ms(spec: str) -> int:
    match = re.fullmatch(r"now-(\d+)([smhd])", spec)
    assert match, f"a relative time range, not {spec!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)] * 1000


def fields_used(panel: dict) -> set[str]:
    """The frame fields a panel names before any renaming: the bar chart's
    x field and the fields its transformations keep, convert, sort or drop."""
    used = set()
    if panel.get("options", {}).get("xField"):
        used.add(panel["options"]["xField"])
    for t in panel.get("transformations", []):
        options = t.get("options", {})
        used |= set(options.get("include", {}).get("names", []))
        used |= {c["targetField"] for c in options.get("conversions", [])}
        used |= {s["field"] for s in options.get("sort", [])}
        used |= set(options.get("excludeByName", {})) | set(options.get("renameByName", {}))
    return used


def value_mappings(panel: dict) -> dict[str, dict]:
    """The values a panel shows by another name (value mappings), with how."""
    mapped = {}
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        if mapping.get("type") == "value":
            mapped.update(mapping["options"])
    return mapped


def charted_fields(frame: dict[str, list]) -> set[str]:
    """Fields the panel draws as numbers: everything but the labels (Field)
    and the stream's id and time."""
    return {name for name in frame if name not in {"Field", "$streamId", "$time"}}


def is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
