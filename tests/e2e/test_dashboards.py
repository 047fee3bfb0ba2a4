"""Every query of the Grafana dashboard, evaluated by a real Prometheus (Debian's) scraping
every running clusterregistry process of the sandbox, after the demo's scenario ran: a query
that names a metric no process exports, or that returns nothing, fails the test.

The scenario is the demo's (a network function deployed, rewritten, mirrored, Running, deleted,
and its images collected by GC), plus the two things it never does and the dashboard shows: a
pod that opts out of the webhook (a skipped image) and an image the artifact store does not
have (a mirror failure, an Artifact in phase Failed). The nodes pull through the registry
front, and GC's sweep makes it read-only: its row (hit ratio, source and served bytes, spool,
read-only windows) is proven by the same queries, so the sandbox must run the front.

The same Prometheus also checks the ha overlay's sizing against the processes' real memory: a
process the overlay autoscales on memory (HPA target 80% of the request) must stay below that
target through the scenario, or an idle deployment would scale itself to its maximum.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from clusterregistry.config import parse_quantity
from clusterregistry_sandbox.scenarios import NF_NAMESPACE, PULL_SECRET, Scenario
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from clusterregistry_sandbox.systems import System

# Debian's prometheus (and promtool) come with `make setup`: no skip if missing
pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "clusterregistry.json"
EXTRA_NAMESPACE = "dashboards"
SCRAPE_INTERVAL = 1.0


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping static targets every second."""

    def __init__(self, root: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s",
                       "scrape_timeout": f"{SCRAPE_INTERVAL:g}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL:g}s"},
            "scrape_configs": [{
                "job_name": name,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                    "labels": {"component": name}}],
            } for name, port in sorted(targets.items())],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = Process(
            ["prometheus", f"--config.file={root / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            name="prometheus", log_path=root / "prometheus.log")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def start(self) -> None:
        await self.process.start()

        async def ready() -> bool:
            async with self.session.get(f"{self.url}/-/ready") as response:
                return response.status == 200

        await self.process.wait_ready(ready, timeout=60)

    async def stop(self) -> None:
        await self.session.close()
        await self.process.stop()

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]


@pytest.fixture
async def prometheus(system: System, tmp_path: Path) -> AsyncIterator[Prometheus]:
    """Prometheus scraping every clusterregistry process the sandbox runs (probe ports)."""
    targets = {c.name: c.port for c in system.components()
               if c.role == "service" and c.port and c.pid}
    instance = Prometheus(tmp_path / "prometheus", targets)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


async def opt_out_and_missing_image(scenario: Scenario) -> None:
    """A pod the webhook skips (opt-out label) and a Deployment whose image the artifact
    store does not have (the mirror fails), in a namespace of their own so the scenario's
    steps, which watch `nf`, are not disturbed."""
    api, store = scenario.api, scenario.system.artifact_store
    secret = await api.get("Secret", PULL_SECRET, namespace=NF_NAMESPACE)
    assert secret is not None and store.credentials is not None
    await api.apply({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": EXTRA_NAMESPACE}})
    await api.apply({"apiVersion": "v1", "kind": "Secret", "type": secret["type"],
                     "metadata": {"name": PULL_SECRET, "namespace": EXTRA_NAMESPACE},
                     "data": secret["data"]})
    # an image outside the network function: a pod that uses one keeps it referenced (the
    # tracker records a pod's images whether or not they were rewritten), and the scenario's
    # GC step expects every image of the network function to go
    (sample,) = [s for s in scenario.system.samples if s not in scenario.samples][:1]
    await api.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "opted-out", "namespace": EXTRA_NAMESPACE,
                     "labels": {"clusterregistry.io/mutate": "false"}},
        "spec": {"containers": [{"name": "app", "image": sample.reference}],
                 "imagePullSecrets": [{"name": PULL_SECRET}]},
    })
    await api.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "missing", "namespace": EXTRA_NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "missing"}},
            "template": {
                "metadata": {"labels": {"app": "missing"}},
                "spec": {"containers": [{"name": "app",
                                         "image": f"{store.host}/nf/does-not-exist:1.0"}],
                         "imagePullSecrets": [{"name": PULL_SECRET}]},
            },
        },
    })


async def test_every_dashboard_query_returns_data(
    system: System, scenario: Scenario, prometheus: Prometheus
) -> None:
    began = time.time()
    expected = {c.name for c in system.components() if c.role == "service" and c.pid}
    assert {"relay", "tracker", "reconciler", "gc", "webhook"} <= expected, expected
    # the nodes pull through it (one process, or several named front-<n>)
    assert any(re.fullmatch(r"front(-[0-9]+)?", name) for name in expected), expected

    async def scraped_after(moment: float) -> bool:
        targets = (await prometheus.api("targets"))["activeTargets"]
        return {t["labels"]["component"] for t in targets} == expected and all(
            t["health"] == "up" and _timestamp(t["lastScrape"]) > moment for t in targets)

    # Prometheus applies discovered targets a few seconds after it is ready: the scenario
    # starts once every process has been scraped, so the counters' rise is seen
    await wait_for(lambda: scraped_after(began), timeout=30, interval=0.5,
                   description="a first scrape of every process")

    await scenario.deploy()
    await scenario.rewritten()
    await scenario.artifacts_available()
    await scenario.running()
    await opt_out_and_missing_image(scenario)

    async def mirror_failed() -> bool:
        result = await prometheus.api(
            "query", query="sum(clusterregistry_mirror_failures_total)")
        return bool(result["result"]) and float(result["result"][0]["value"][1]) > 0

    await wait_for(mirror_failed, timeout=90, interval=0.5, description="a mirror failure")
    await scenario.delete_network_function()
    await scenario.collect_garbage()

    # every process was scraped at least twice after the scenario's last step (a series the
    # last step created needs two samples for rate() and increase()), and is up
    done = time.time()
    await wait_for(lambda: scraped_after(done + 2.5 * SCRAPE_INTERVAL), timeout=30,
                   interval=0.5, description="two scrapes of every process after the scenario")

    # the time range a dashboard would show: the whole test
    window = f"{math.ceil(time.time() - began) + 5}s"
    variables = {"$__rate_interval": window, "$__range": window}
    failures = []
    for title, query in dashboard_queries():
        expr = query
        for var, value in variables.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, (title, expr)
        for name in set(re.findall(r"\b(clusterregistry_[a-z0-9_]+)\b", expr)):
            series = await prometheus.api("series", **{"match[]": name})
            if not series:
                failures.append(f"{title}: no process exports {name}")
        result = (await prometheus.api("query", query=expr))["result"]
        values = [float(sample["value"][1]) for sample in result]
        if not any(math.isfinite(v) for v in values):
            failures.append(f"{title}: {expr} returned {values or 'nothing'}")
    assert not failures, "\n".join(failures)

    await resident_memory_below_the_hpa_target(prometheus, window)


def ha_memory_targets() -> dict[str, float]:
    """Deployment component -> bytes at which the ha overlay's HPA scales on memory."""
    kubectl = Path(sys.executable).parent / "kubectl"
    built = subprocess.run([str(kubectl), "kustomize", str(ROOT / "deploy" / "kustomize" /
                                                           "overlays" / "ha")],
                           capture_output=True, text=True, check=True, timeout=120).stdout
    objs = [o for o in yaml.safe_load_all(built) if o]
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    out = {}
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        (memory,) = [m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]
                     if m["resource"]["name"] == "memory"]
        deployment = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        pod = deployment["spec"]["template"]["spec"]
        request = sum(parse_quantity(c["resources"]["requests"]["memory"])
                      for c in pod["containers"])
        component = deployment["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"]
        out[component] = request * memory / 100
    return out


async def resident_memory_below_the_hpa_target(prometheus: Prometheus, window: str) -> None:
    targets = ha_memory_targets()
    measured = 0
    for component, limit in sorted(targets.items()):
        if component == "registry":
            continue  # distribution's registry, not a Python process of the sandbox
        query = (f'max(max_over_time(process_resident_memory_bytes'
                 f'{{component=~"{component}(-[0-9]+)?"}}[{window}]))')
        result = (await prometheus.api("query", query=query))["result"]
        assert result, f"no resident memory of {component}"
        rss = float(result[0]["value"][1])
        assert rss < limit, (
            f"{component}: {rss / 2**20:.0f} MiB resident, the HPA scales at "
            f"{limit / 2**20:.0f} MiB: raise its memory request")
        measured += 1
    assert measured == 3  # webhook, tracker, mirror


def _timestamp(rfc3339: str) -> float:
    """Prometheus's lastScrape (RFC 3339 with nanoseconds) as a UNIX time."""
    head, _, rest = rfc3339.partition(".")
    fraction = re.match(r"\d*", rest).group(0)  # type: ignore[union-attr]
    zone = rest[len(fraction):]
    parsed = dt.datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    return parsed.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)

