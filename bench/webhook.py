"""Webhook throughput and latency over HTTPS, beside a bare aiohttp HTTPS server, same run.

What is measured: `cmd/webhook.py` as a cluster runs it (its own process, file
certificates, default settings: policy Always, AOSM's default match condition
enforced in the webhook), answering AdmissionReviews for a realistic pod a
Deployment would create: 3 containers and 2 init containers (5 images, all
rewritten), labels, an ownerReference, env, resources, probes, volume mounts,
about 7 KB of JSON, sent as kube-apiserver sends it (userInfo, options).

Baseline: a bare aiohttp HTTPS server (this file run as a script: its own
process, the same certificate, the same aiohttp and the same TLS settings)
that reads the body and returns one fixed AdmissionReview response. The gap
between the two is what the webhook's decoding, matching, rewriting, patch
building and metrics cost on top of HTTP and TLS.

Load comes from `wrk` (C, one thread, keep-alive connections, TLS; Debian
package `wrk`) with a Lua script that POSTs the review; at each concurrency
the bare server and the webhook run back to back, alternately (three rounds,
the order flipped each round), for the same duration, and the medians count,
so drift in the shared machine's load hits both alike. Then both get a
fixed rate of half the webhook's peak (each connection pauses between requests,
wrk's `delay()`), and their p50/p99 are read there: the goal is p99 under 10 ms
at that rate, and at least half the bare server's peak throughput.

Two body mixes. `new_images`: every review carries a sequence number in a
label and in the tag of each of its 5 images, so nothing the webhook keeps
helps (every image parsed, mapped and decided afresh): the worst case, pods of
ever new workloads. `same_template`: only the label differs, as between the pods
of a ReplicaSet or StatefulSet scaling up: the webhook decides the rewrite once
and answers the rest from its decision cache. The
CPU time each server process spends per review over the closed-loop runs is
reported too: on a shared machine it moves far less than throughput does.

Both servers are single Python processes (one core each at most); wrk takes
the other core of this 2-core machine, which other engineers share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from clusterregistry.webhook.certificates import self_signed
from clusterregistry_sandbox.supervising import Process, free_port, run_command, wait_for

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
LOCAL_REGISTRY = "clusterregistry.clusterregistry.svc:5000"
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
SEQ_PLACEHOLDER = "SEQXXXXX"


def realistic_review(*, sequenced_images: bool = False) -> bytes:
    """An AdmissionReview for a 5-image pod, as kube-apiserver sends a ReplicaSet's pod.

    A label holds SEQ_PLACEHOLDER, and with `sequenced_images` every image tag too.
    """
    seq = f"-{SEQ_PLACEHOLDER}" if sequenced_images else ""
    def container(name: str, image: str, port: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "env": [{"name": f"{name.upper()}_{i}", "value": f"value-{i}"} for i in range(6)]
            + [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                "fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                          "requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/nf"},
                             {"name": "kube-api-access-x7k2p", "readOnly": True,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
        if port:
            out["ports"] = [{"containerPort": port, "protocol": "TCP", "name": "http"}]
            out["readinessProbe"] = {"httpGet": {"path": "/ready", "port": port,
                                                 "scheme": "HTTP"},
                                     "periodSeconds": 10, "timeoutSeconds": 1,
                                     "successThreshold": 1, "failureThreshold": 3}
        return out

    digest = "sha256:" + "5f" * 32
    pod = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "generateName": "upf-7d9c8b6f5-", "namespace": "nf",
            "labels": {"app": "upf", "pod-template-hash": "7d9c8b6f5",
                       # replaced per request (wrk's Lua script)
                       "bench-seq": SEQ_PLACEHOLDER,
                       "app.kubernetes.io/part-of": "5g-core", "tier": "user-plane"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "upf-7d9c8b6f5",
                                 "uid": "9f3c1b7e-2d4a-4b8e-9a61-0c5e7d2f8a13",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "volumes": [{"name": "config", "configMap": {"name": "upf-config",
                                                         "defaultMode": 420}},
                        {"name": "kube-api-access-x7k2p", "projected": {"sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607,
                                                     "path": "token"}}]}}],
            "initContainers": [
                container("init-config", f"myacr.azurecr.io/nf/init-config:2.4.1{seq}"),
                container("wait-db", f"busybox:1.36{seq}"),
            ],
            "containers": [
                container("upf", f"myacr.azurecr.io/nf/upf:1.2.3{seq}@{digest}", 8080),
                container("sidecar", f"myacr.azurecr.io/nf/telemetry-agent:0.9{seq}", 9090),
                container("envoy", f"docker.io/envoyproxy/envoy:v1.29.1{seq}", 15000),
            ],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "upf",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }
    review = {
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "nf", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "a1b2c3", "groups": ["system:serviceaccounts",
                                                     "system:serviceaccounts:kube-system",
                                                     "system:authenticated"]},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review).encode()


# -- the baseline server (this file run as a script) -------------------------------------------

def bare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    fixed = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                                     "allowed": True}}).encode()

    async def mutate(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=fixed, content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    app = web.Application(client_max_size=6 * 1024 * 1024)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, ssl_context=context, access_log=None,
                print=None, backlog=1024)


# -- load -----------------------------------------------------------------------------------------

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
local template = f:read("*a")
f:close()
wrk.body = template
local counter = 0
request = function()
  counter = counter + 1
  -- the same length in every review: a different pod, the same size
  local body = string.gsub(template, "{seq}", string.format("%08d", counter))
  return wrk.format(nil, nil, nil, body)
end
{delay}
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


async def wrk(url: str, *, connections: int, seconds: float, script: Path) -> dict[str, Any]:
    result = await run_command(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(script), url], timeout=seconds + 60)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", result.output)
    if match is None:
        raise RuntimeError(f"wrk did not report: {result.output[-2000:]}")
    requests, duration_us, bad_status, socket_errors, p50, p99, worst = map(int, match.groups())
    return {
        "reviews_per_s": round(requests / (duration_us / 1e6), 1),
        "p50_ms": round(p50 / 1000, 3), "p99_ms": round(p99 / 1000, 3),
        "max_ms": round(worst / 1000, 3), "requests": requests,
        "non_2xx": bad_status, "socket_errors": socket_errors,
    }


async def _rounds(urls: dict[str, str], *, rounds: int, connections: int, seconds: float,
                  script: Path) -> dict[str, list[dict[str, Any]]]:
    """`rounds` runs of each server, alternating, so the machine's drift hits both alike."""
    samples: dict[str, list[dict[str, Any]]] = {"bare": [], "webhook": []}
    for index in range(rounds):
        order = ("bare", "webhook") if index % 2 == 0 else ("webhook", "bare")
        for name in order:
            samples[name].append(await wrk(urls[name], connections=connections,
                                           seconds=seconds, script=script))
    return samples


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the rounds (requests and errors: their sums)."""
    out: dict[str, Any] = {}
    for key in ("reviews_per_s", "p50_ms", "p99_ms", "max_ms"):
        out[key] = statistics.median(run[key] for run in runs)
    for key in ("requests", "non_2xx", "socket_errors"):
        out[key] = sum(run[key] for run in runs)
    return out


async def _ready(url: str, context: ssl.SSLContext) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _check_answers(webhook_url: str, bare_url: str, context: ssl.SSLContext,
                         body: bytes) -> dict[str, Any]:
    """Both servers answer the review as they should before anything is timed."""
    async with aiohttp.ClientSession() as session:
        async with session.post(webhook_url, data=body, ssl=context,
                                headers={"Content-Type": "application/json"}) as resp:
            answer = (await resp.json())["response"]
        async with session.post(bare_url, data=body, ssl=context) as resp:
            bare = (await resp.json())["response"]
    patch = json.loads(base64.b64decode(answer["patch"]))
    images = [op["value"] for op in patch if op["path"].endswith("/image")]
    return {"webhook_rewrites": len(images),
            "webhook_images_local": all(i.startswith(LOCAL_REGISTRY + "/") for i in images),
            "webhook_patch_ops": len(patch), "bare_allowed": bare["allowed"] is True,
            "review_bytes": len(body)}


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _scenario(urls: dict[str, str], pids: dict[str, int | None], *, template: Path,
                    levels: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    """Closed-loop levels, then a paced run at half the webhook's peak, for one body mix."""
    def script(name: str, delay: str = "") -> Path:
        path = template.with_name(f"{template.stem}-{name}.lua")
        path.write_text(_LUA.format(body=template, delay=delay, seq=SEQ_PLACEHOLDER))
        return path

    closed = script("closed")
    for name in ("bare", "webhook"):  # warm both (caches, TLS paths)
        await wrk(urls[name], connections=4, seconds=1, script=closed)
    by_level: list[dict[str, Any]] = []
    cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    for connections in levels:
        samples = await _rounds(urls, rounds=rounds, connections=connections, seconds=seconds,
                                script=closed)
        row: dict[str, Any] = {"connections": connections}
        for name in ("bare", "webhook"):
            row[name] = _median(samples[name])
        row["ratio"] = round(row["webhook"]["reviews_per_s"]
                             / max(row["bare"]["reviews_per_s"], 1e-9), 3)
        row["samples"] = samples
        by_level.append(row)
    # CPU per review over all closed-loop runs: the figure least disturbed by other load
    cpu_us = {}
    for name, pid in pids.items():
        requests = sum(row[name]["requests"] for row in by_level)
        cpu_us[name] = round((_cpu_seconds(pid) - cpu_before[name]) / max(requests, 1) * 1e6, 1)
    webhook_peak = max(r["webhook"]["reviews_per_s"] for r in by_level)
    bare_peak = max(r["bare"]["reviews_per_s"] for r in by_level)
    # half the webhook's peak, paced: 8 connections each pausing between requests
    half = webhook_peak / 2
    paced_connections = 8
    pause_ms = max(0, round(paced_connections * 1000 / half))
    paced = script("paced", delay=f"delay = function() return {pause_ms} end")
    at_half: dict[str, Any] = {"target_reviews_per_s": round(half, 1),
                               "connections": paced_connections, "pause_ms": pause_ms}
    samples = await _rounds(urls, rounds=rounds, connections=paced_connections,
                            seconds=seconds, script=paced)
    for name in ("bare", "webhook"):
        at_half[name] = _median(samples[name])
    at_half["samples"] = samples
    ratio = round(webhook_peak / max(bare_peak, 1e-9), 3)
    return {
        "levels": by_level,
        "webhook_peak_reviews_per_s": webhook_peak,
        "bare_peak_reviews_per_s": bare_peak,
        "peak_ratio": ratio,
        "cpu_us_per_review": cpu_us,
        "cpu_ratio": round(cpu_us["bare"] / max(cpu_us["webhook"], 1e-9), 3),
        "at_half_webhook_peak": at_half,
        "meets_ratio": ratio >= TARGET_RATIO,
        "meets_p99": at_half["webhook"]["p99_ms"] < TARGET_P99_MS,
    }


async def webhook(*, quick: bool = False) -> dict[str, Any]:
    levels = [1, 8] if quick else [1, 4, 16, 64]
    seconds = 1.0 if quick else 3.0
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as folder:
        tmp = Path(folder)
        material = self_signed(["127.0.0.1"])
        (tmp / "tls.crt").write_bytes(material.cert_pem)
        (tmp / "tls.key").write_bytes(material.key_pem)
        body = realistic_review()
        templates = {"new_images": tmp / "new-images.json",
                     "same_template": tmp / "same-template.json"}
        templates["new_images"].write_bytes(realistic_review(sequenced_images=True))
        templates["same_template"].write_bytes(body)
        context = ssl.create_default_context(cadata=material.ca_pem.decode())
        webhook_port, probe_port, bare_port = free_port(), free_port(), free_port()
        env = {**os.environ,
               "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
               "CLUSTERREGISTRY_WEBHOOK_HOST": "127.0.0.1",
               "CLUSTERREGISTRY_WEBHOOK_PORT": str(webhook_port),
               "CLUSTERREGISTRY_WEBHOOK_TLSCERTFILE": str(tmp / "tls.crt"),
               "CLUSTERREGISTRY_WEBHOOK_TLSKEYFILE": str(tmp / "tls.key"),
               "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
               "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
               "CLUSTERREGISTRY_LOCALREGISTRY": LOCAL_REGISTRY,
               "CLUSTERREGISTRY_LOG_FORMAT": "json"}
        servers = {
            "webhook": Process([sys.executable, str(ROOT / "cmd" / "webhook.py")],
                               name="webhook", log_path=tmp / "webhook.log", env=env),
            "bare": Process([sys.executable, str(HERE), "bare",
                             "--port", str(bare_port), "--cert", str(tmp / "tls.crt"),
                             "--key", str(tmp / "tls.key")],
                            name="bare-aiohttp", log_path=tmp / "bare.log"),
        }
        urls = {"webhook": f"https://127.0.0.1:{webhook_port}/mutate",
                "bare": f"https://127.0.0.1:{bare_port}/mutate"}
        try:
            for process in servers.values():
                await process.start()
            await wait_for(lambda: _ready(f"https://127.0.0.1:{webhook_port}/readyz", context),
                           timeout=60, description="webhook ready")
            await wait_for(lambda: _ready(f"https://127.0.0.1:{bare_port}/healthz", context),
                           timeout=60, description="bare server ready")
            checks = await _check_answers(urls["webhook"], urls["bare"], context, body)
            pids = {name: process.pid for name, process in servers.items()}
            scenarios = {}
            for name, template in templates.items():
                scenarios[name] = await _scenario(urls, pids, template=template,
                                                  levels=levels, rounds=rounds,
                                                  seconds=seconds)
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{probe_port}/metrics") as resp:
                metrics_text = await resp.text()
        finally:
            for process in servers.values():
                await process.stop(grace=10)
    patched = re.search(r'clusterregistry_webhook_admissions_total\{outcome="patched"\} (\S+)',
                        metrics_text)
    return {
        "checks": checks,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "goal_ratio": TARGET_RATIO,
        "goal_p99_ms": TARGET_P99_MS,
        **scenarios,
        "webhook_patched_total": float(patched.group(1)) if patched else None,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare_main(sys.argv[2:])
    else:
        print(json.dumps(asyncio.run(webhook(quick="--quick" in sys.argv)), indent=2))
