"""The Grafana dashboard asks Prometheus only for metrics the processes really export, with
queries Prometheus accepts, and covers everything the issue promises to show; the README's
metrics table lists exactly what the processes export.

The exported names come from the services' own metrics modules (each metrics class
instantiated on a fresh registry), so a renamed metric fails here before an operator finds an
empty panel. tests/e2e/test_dashboards.py runs the same queries against Prometheus scraping
the running system.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "clusterregistry.json"
SERVICES = ("webhook", "relay", "tracker", "reconciler", "mirror", "gc", "front")
# Grafana's variables, as the e2e test and Grafana substitute them
VARIABLES = {"$__rate_interval": "1m", "$__range": "1h"}
# what the dashboard must show (the list) -> metrics that must appear in its queries
TOPICS = {
    "admissions": {"clusterregistry_webhook_admissions_total"},
    "admission latency": {"clusterregistry_webhook_admission_seconds_bucket"},
    "events relayed": {"clusterregistry_relay_events_published_total"},
    "relay lag": {"clusterregistry_relay_lag_seconds_bucket"},
    "references": {"clusterregistry_reconciler_references"},
    "artifacts by phase": {"clusterregistry_reconciler_artifacts"},
    "mirror throughput": {"clusterregistry_mirror_copied_bytes_total"},
    "mirror failures": {"clusterregistry_mirror_failures_total"},
    "registry usage": {"clusterregistry_gc_storage_used_bytes",
                       "clusterregistry_gc_storage_capacity_bytes"},
    "gc runs": {"clusterregistry_gc_runs_total"},
    "bytes freed": {"clusterregistry_gc_freed_bytes_total"},
    "read-only window": {"clusterregistry_gc_last_read_only_seconds"},
    # the registry front (issue 15)
    "front requests by result": {"clusterregistry_front_requests_total"},
    "front source bytes vs served bytes": {"clusterregistry_front_source_bytes_total",
                                           "clusterregistry_front_served_bytes_total"},
    "front spool": {"clusterregistry_front_spool_bytes"},
    "front read-only refusals": {"clusterregistry_front_read_only_refusals_total"},
    "front read-only windows": {"clusterregistry_front_read_only",
                                "clusterregistry_front_read_only_seconds_bucket"},
}
# label values the front's panels select on -> the metrics module's own sets of them
FRONT_LABEL_VALUES = {"kind": "KINDS", "result": "RESULTS"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",), "summary": ("_sum", "_count"), "info": ("_info",)}


def families_of(service: str) -> dict[str, str]:
    """Metric families (as Prometheus names them: counters with `_total`) -> type, of one
    service's metrics module: every class there that takes `registry`, on a fresh registry."""
    module = importlib.import_module(f"clusterregistry.{service}.metrics")
    registry = CollectorRegistry()
    made = 0
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__:
            continue
        if "registry" in inspect.signature(cls.__init__).parameters:
            cls(registry=registry)
            made += 1
    assert made, f"no metrics class in {module.__name__}"
    return {family.name + ("_total" if family.type == "counter" else ""): family.type
            for family in registry.collect()}


def exported_by(service: str) -> set[str]:
    """The sample names a service exports."""
    names = set()
    for family, kind in families_of(service).items():
        base = family.removesuffix("_total") if kind == "counter" else family
        names |= {base + suffix for suffix in _SUFFIXES[kind]}
    return names


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return {service: exported_by(service) for service in SERVICES}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, with Grafana's variables substituted."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(clusterregistry_[a-z0-9_]+)\b", expr))


def test_every_query_names_an_exported_metric(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    every = set().union(*exported.values())
    used: set[str] = set()
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert "$" not in expr, (title, expr)  # an unknown variable
        assert names, (title, expr)  # every query shows something a process exports
        missing = names - every
        assert not missing, f"panel {title!r} queries {missing}, which no process exports"
        used |= names
    for topic, needed in TOPICS.items():
        assert needed <= used, f"no panel shows {topic}"


def test_the_dashboard_is_grafana_json(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "clusterregistry"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
    # panels do not overlap
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area


def test_the_front_row(dashboard: dict[str, Any]) -> None:
    """The registry front's row: a hit ratio over manifest and blob requests, and selectors
    that name only kinds and results the front really counts (a typo is an empty panel)."""
    titles = [p["title"] for p in dashboard["panels"]]
    row = titles.index("Registry front")
    front = [(title, expr) for title, expr in queries(dashboard)
             if titles.index(title) > row]
    assert front and all("clusterregistry_front_" in expr for _, expr in front)
    metrics = importlib.import_module("clusterregistry.front.metrics")
    for title, expr in front:
        for label, attribute in FRONT_LABEL_VALUES.items():
            for matcher in re.findall(rf'\b{label}(=~?)"([^"]*)"', expr):
                op, value = matcher
                values = value.split("|") if op == "=~" else [value]
                assert set(values) <= set(getattr(metrics, attribute)), (title, expr)
    ratios = [expr for title, expr in front if title == "Front hit ratio"]
    assert ratios
    for ratio in ratios:
        hits, requests = ratio.split(" / ")
        assert 'result="hit"' in hits and 'kind=~"manifest|blob"' in hits
        assert requests == hits.replace(',result="hit"', "")  # the same requests, any result


def test_promtool_accepts_every_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": expr}
             for i, (_, expr) in enumerate(queries(dashboard))]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_the_readme_metrics_table_lists_every_exported_metric() -> None:
    """README, Metrics: one row per metric family, named as Prometheus shows it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\w+) \|", section, re.M)
    documented = dict(rows)
    families = {name: service for service in SERVICES for name in families_of(service)}
    assert set(documented) == set(families), {
        "undocumented": set(families) - set(documented),
        "not exported": set(documented) - set(families)}
    assert documented == families  # each row names the process that exports it
