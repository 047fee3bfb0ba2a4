"""The manifests keep their promises: schema-valid, hardened, least-privilege, and as highly
available as AOSM's cluster registry says it is.

Every assertion reads the objects `kubectl kustomize` renders (see conftest), so what is
checked is what a cluster would receive, not the source files.
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from clusterregistry import config, kinds
from clusterregistry.config import DEFAULT_MATCH_CONDITION, parse_quantity
from clusterregistry.gc.sweeping import sweep_job

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
Obj = dict[str, Any]
Build = Callable[[str], list[Obj]]

NAMESPACE = "clusterregistry"
PROCESSES = ("webhook", "relay", "tracker", "reconciler", "mirror", "gc", "front")
DEPLOYMENTS = ("registry", *PROCESSES)
WORKLOADS = (*DEPLOYMENTS, "nats")
# AOSM's HPA covers the registry and the webhook; the tracker (one shared durable consumer)
# and the mirror workers (one work queue) split their work and scale the same way. Each
# reconciler replica reconciles every Artifact, the relay has one Lease holder and GC one
# fence holder: more replicas of those add work or standbys, not capacity.
AUTOSCALED = ("registry", "webhook", "tracker", "mirror")
BUILDS = ("base", "dev", "ha", "ha+components", "ha+large")
# Kubernetes versions the objects are validated against: the oldest supported and the newest
# kubernetes-validate ships
K8S_VERSIONS = ("1.30", "1.37")
# Kinds from other projects' CRDs: kubernetes-validate has no schema for them, and their CRDs
# (cert-manager, Prometheus Operator) are not vendored here; their fields are checked by the
# component tests below instead.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}
# AOSM's clusterRegistry.registryService.scale: (requests, limits) as (cpu, memory)
REGISTRY_SCALES = {
    "small": (("100m", "250Mi"), ("100m", "2Gi")),
    "medium": (("250m", "500Mi"), ("500m", "2Gi")),
    "large": (("500m", "1Gi"), ("1", "4Gi")),
}
SYSTEM_POOL = ("kubernetes.azure.com/mode", "system")


# -- helpers ----------------------------------------------------------------------------------


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads(objs: list[Obj]) -> Iterator[Obj]:
    yield from (o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))


def component(workload: Obj) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def workload(objs: list[Obj], name: str) -> Obj:
    found = [w for w in workloads(objs) if component(w) == name]
    assert len(found) == 1, f"workload {name}: {len(found)} found"
    return found[0]


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def cpu(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics (an empty selector matches everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(w: Obj) -> dict[str, str]:
    return dict(w["spec"]["template"]["metadata"]["labels"])


def settings_of(objs: list[Obj], tmp_path: Path, container: Obj | None = None
                ) -> config.Settings:
    """The settings file the processes mount, loaded by the real loader (validated), with
    the container's literal environment on top when given (as the process loads them)."""
    configmaps = [c for c in of_kind(objs, "ConfigMap")
                  if c["metadata"]["name"].startswith("clusterregistry-settings")]
    assert len(configmaps) == 1
    path = tmp_path / "settings.yaml"
    path.write_text(configmaps[0]["data"]["settings.yaml"])
    env = {e["name"]: e["value"] for e in (container or {}).get("env", []) if "value" in e}
    return config.load(path, env=env)


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads and parses its schema files (megabytes of JSON) on every
    call; read each once for this module. Validation itself is unchanged."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents",
                      functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents))
        yield


# -- every build ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_every_object_is_valid_against_the_kubernetes_schemas(build: Build, name: str) -> None:
    objs = build(name)
    unchecked = set()
    for obj in objs:
        if obj["kind"] in FOREIGN_KINDS:
            unchecked.add(obj["kind"])
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against {version}: "
                            f"{exc.message} at {'.'.join(map(str, exc.path))}")
    assert unchecked <= FOREIGN_KINDS


def test_the_validator_rejects_what_a_cluster_would(build: Build) -> None:
    """The schema check can fail: an unknown field and a wrong type are both caught."""
    deployment = copy.deepcopy(named(build("ha"), "Deployment", "clusterregistry-relay"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)
    pdb = copy.deepcopy(named(build("ha"), "PodDisruptionBudget", "clusterregistry-relay"))
    pdb["spec"]["minAvailable"] = [2]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, "1.30", strict=True)


@pytest.mark.parametrize("name", BUILDS)
def test_everything_lives_in_the_clusterregistry_namespace(build: Build, name: str) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                      "ClusterRoleBinding", "MutatingWebhookConfiguration"}
    for obj in build(name):
        # one label finds (and removes) everything: kubectl delete -l app.kubernetes.io/part-of
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "clusterregistry", (
            obj["kind"], obj["metadata"]["name"])
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]["name"]
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"
    labels = named(build(name), "Namespace", NAMESPACE)["metadata"]["labels"]
    # Pod Security Admission enforces restricted (see
    # test_every_pod_passes_the_namespace_pod_security_level)
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("name", BUILDS)
def test_the_artifact_crd_is_installed(build: Build, name: str) -> None:
    crd = named(build(name), "CustomResourceDefinition", "artifacts.clusterregistry.io")
    assert crd["spec"]["group"] == "clusterregistry.io"
    assert any(v["storage"] for v in crd["spec"]["versions"])


@pytest.mark.parametrize("name", BUILDS)
def test_every_workload_is_present(build: Build, name: str) -> None:
    objs = build(name)
    assert sorted(component(w) for w in workloads(objs)) == sorted(WORKLOADS)
    assert workload(objs, "nats")["kind"] == "StatefulSet"


@pytest.mark.parametrize("name", BUILDS)
def test_every_container_is_hardened(build: Build, name: str) -> None:
    for w in workloads(build(name)):
        pod = w["spec"]["template"]["spec"]
        pod_ctx = pod.get("securityContext") or {}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), f"{component(w)}: {key}"
        for c in containers(pod):
            where = f"{component(w)}/{c['name']}"
            ctx = c.get("securityContext") or {}
            effective = {**pod_ctx, **ctx}
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser", 1) != 0, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert not ctx.get("privileged"), where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@pytest.mark.parametrize("name", BUILDS)
def test_every_container_has_probes_and_resources(build: Build, name: str) -> None:
    for w in workloads(build(name)):
        for c in containers(w["spec"]["template"]["spec"]):
            where = f"{component(w)}/{c['name']}"
            assert "httpGet" in c["readinessProbe"], where
            assert "livenessProbe" in c, where
            resources = c["resources"]
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                if kind == "cpu":
                    assert 0 < cpu(request) <= cpu(limit), where
                else:
                    assert 0 < parse_quantity(request) <= parse_quantity(limit), where


@pytest.mark.parametrize("name", BUILDS)
def test_images_are_pinned(build: Build, name: str) -> None:
    for w in workloads(build(name)):
        for c in containers(w["spec"]["template"]["spec"]):
            image = c["image"]
            assert re.fullmatch(r"[a-z0-9.-]+(:\d+)?/[a-z0-9./_-]+:[A-Za-z0-9._-]+", image), image
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("name", BUILDS)
def test_references_between_objects_resolve(build: Build, name: str) -> None:
    """ConfigMaps (hash-suffixed by kustomize), PVCs, ServiceAccounts, Services, probe ports."""
    objs = build(name)
    configmaps = {c["metadata"]["name"] for c in of_kind(objs, "ConfigMap")}
    secrets_from_certificates = {c["spec"]["secretName"] for c in of_kind(objs, "Certificate")}
    claims = {c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")}
    accounts = {a["metadata"]["name"] for a in of_kind(objs, "ServiceAccount")}
    for w in workloads(objs):
        pod = w["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts
        templates = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, v
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, v
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets_from_certificates, v
        for c in containers(pod):
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in ports, (component(w), probe)
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, mount
    pods = [w for w in workloads(objs)]
    for svc in of_kind(objs, "Service"):
        selected = [w for w in pods if selector_matches(
            {"matchLabels": svc["spec"]["selector"]}, pod_labels(w))]
        assert len(selected) == 1, svc["metadata"]["name"]
        port_names = {p["name"] for c in containers(selected[0]["spec"]["template"]["spec"])
                      for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (svc["metadata"]["name"], port)


@pytest.mark.parametrize("name", BUILDS)
def test_every_process_runs_its_entry_point_with_the_settings(
    build: Build, name: str, tmp_path: Path
) -> None:
    """`python /app/cmd/<name>.py --config <mounted settings>` (the Dockerfile copies cmd/ to
    /app/cmd), its identity from the downward API when the service declares one, probes on the
    settings' probePort."""
    objs = build(name)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY cmd /app/cmd$", dockerfile, re.M)
    probe_port = settings_of(objs, tmp_path).probe_port
    for process in PROCESSES:
        w = workload(objs, process)
        pod = w["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["command"] == ["python", f"/app/cmd/{process}.py"]
        args = c["args"]
        settings_path = Path(args[args.index("--config") + 1])
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(settings_path.parent)]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"].startswith("clusterregistry-settings")
        if importlib.import_module(f"clusterregistry.{process}.serving").SERVICE.identity_help:
            assert args[args.index("--identity") + 1] == "$(POD_NAME)"
        else:
            assert "--identity" not in args, f"{process} has no identity"
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["CLUSTERREGISTRY_LOG_FORMAT"]["value"] == "json"  # no tty guess
        if process == "front":  # front.advertiseUrl's default is http://$POD_IP:<port>
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        (probes,) = [p for p in c["ports"] if p["name"] == "probes"]
        assert probes["containerPort"] == probe_port
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


# -- settings agree with the objects ----------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_settings_agree_with_the_manifests(build: Build, name: str, tmp_path: Path) -> None:
    objs = build(name)
    settings = settings_of(objs, tmp_path)
    registry = workload(objs, "registry")
    reg_pod = registry["spec"]["template"]["spec"]
    (claim_volume,) = [v for v in reg_pod["volumes"] if "persistentVolumeClaim" in v]
    claim = named(objs, "PersistentVolumeClaim",
                  claim_volume["persistentVolumeClaim"]["claimName"])
    # clusterRegistry.storageSize / storageClassName are the PVC's
    assert settings.cluster_registry.storage_size == claim["spec"]["resources"]["requests"][
        "storage"]
    assert settings.cluster_registry.storage_class_name == claim["spec"].get(
        "storageClassName", "")
    # localRegistry (what pods pull from) is the front's Service, on the front's port;
    # registryEndpoint (what the front proxies to and the mirror writes to) is distribution's
    front = workload(objs, "front")
    (front_c,) = front["spec"]["template"]["spec"]["containers"]
    (reg_c,) = reg_pod["containers"]
    for address, target, container, target_port in (
        (settings.local_registry, front, front_c, settings.front.port),
        (settings.registry_endpoint, registry, reg_c, 5000),
    ):
        host, _, port = address.partition(":")
        svc_name, svc_namespace, svc = host.split(".")
        assert (svc_namespace, svc) == (NAMESPACE, "svc")
        service = named(objs, "Service", svc_name)
        assert [w for w in workloads(objs) if selector_matches(
            {"matchLabels": service["spec"]["selector"]}, pod_labels(w))] == [target], address
        (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[svc_port["targetPort"]] == target_port, address
    assert settings.registry == settings.registry_endpoint != settings.local_registry
    # NATS: the client Service, and stream replicas no more than servers
    nats = workload(objs, "nats")
    assert settings.nats.stream_replicas <= nats["spec"]["replicas"]
    for url in settings.nats.servers:
        host = url.removeprefix("nats://").split(":")[0].split(".")[0]
        svc = named(objs, "Service", host)
        assert selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(nats))
    # the HA toggles say what the overlay does
    ha = registry["spec"]["replicas"] >= 3
    assert settings.cluster_registry.high_availability.enabled == ha
    assert settings.webhook.high_availability.enabled == (
        workload(objs, "webhook")["spec"]["replicas"] >= 3)
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")}
    assert settings.cluster_registry.auto_scaling.enabled == (
        registry["metadata"]["name"] in hpas)
    assert settings.webhook.auto_scaling.enabled == ("clusterregistry-webhook" in hpas)
    # GC's sweep Job uses the registry's own image, volume and configuration
    gc = settings.gc
    assert gc.sweep_mode == "job"
    assert gc.job_image == reg_pod["containers"][0]["image"]
    assert gc.job_volume_claim == claim["metadata"]["name"]
    (config_volume,) = [v for v in reg_pod["volumes"] if "configMap" in v]
    assert gc.job_config_map == config_volume["configMap"]["name"]
    gc_pod = workload(objs, "gc")["spec"]["template"]["spec"]
    (gc_claim,) = [v for v in gc_pod["volumes"] if "persistentVolumeClaim" in v]
    assert gc_claim["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (gc_mount,) = [m for m in gc_pod["containers"][0]["volumeMounts"]
                   if m["name"] == gc_claim["name"]]
    assert gc_mount["mountPath"] == gc.storage_path and gc_mount["readOnly"] is True
    registry_config = yaml.safe_load(named(objs, "ConfigMap", gc.job_config_map)["data"][
        "config.yml"])
    assert registry_config["storage"]["filesystem"]["rootdirectory"] == gc.storage_path


@pytest.mark.parametrize("name", BUILDS)
def test_the_registry(build: Build, name: str, tmp_path: Path) -> None:
    objs = build(name)
    registry = workload(objs, "registry")
    (c,) = registry["spec"]["template"]["spec"]["containers"]
    cfg = yaml.safe_load(named(objs, "ConfigMap", "clusterregistry-registry-config")["data"][
        "config.yml"])
    port = int(cfg["http"]["addr"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v2/" and ports[probe["port"]] == port
    assert cfg["storage"]["delete"]["enabled"] is True
    # replicas share one volume: a blob-descriptor cache could claim a swept blob exists
    assert "cache" not in cfg["storage"]
    assert cfg["http"]["debug"]["prometheus"]["enabled"] is True
    # the requests and limits of clusterRegistry.registryService.scale
    scale = settings_of(objs, tmp_path).cluster_registry.registry_service.scale
    if name == "ha+large":
        scale = "large"
    (req_cpu, req_mem), (lim_cpu, lim_mem) = REGISTRY_SCALES[scale]
    assert c["resources"] == {"requests": {"cpu": req_cpu, "memory": req_mem},
                              "limits": {"cpu": lim_cpu, "memory": lim_mem}}


@pytest.mark.parametrize("name", BUILDS)
def test_the_front(build: Build, name: str, tmp_path: Path) -> None:
    """The registry front as its settings expect it: its port, a bounded spool on an emptyDir
    larger than spoolLimit, its own address from the downward API, the source credentials the
    mirror has, GC waiting on it for read-only and the mirror reading sources through it."""
    objs = build(name)
    pod = workload(objs, "front")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    settings = settings_of(objs, tmp_path, c)
    front = settings.front
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"registry": front.port, "probes": settings.probe_port}
    assert front.host == "0.0.0.0"  # kubelets and peers reach it on the pod address
    # one settings file for every replica: a literal address or id would be every replica's
    assert front.advertise_url == "" and front.front_id == ""
    # the spool: an emptyDir at spoolDir whose sizeLimit is above spoolLimit, so the front's
    # own bound is reached before the kubelet evicts the pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    (spool,) = [m for m in c["volumeMounts"] if m["mountPath"] == front.spool_dir]
    assert not spool.get("readOnly")
    size_limit = parse_quantity(volumes[spool["name"]]["emptyDir"]["sizeLimit"])
    assert parse_quantity(front.spool_limit) < size_limit
    # blob hits from disk: distribution's own claim, read-only, at storagePath (not in dev,
    # whose ReadWriteOnce volume would pin the front to the registry's node)
    storage = [m for m in c["volumeMounts"] if "persistentVolumeClaim" in volumes[m["name"]]]
    if name == "dev":
        assert storage == [] and front.storage_path == ""
    else:
        (mount,) = storage
        claim = volumes[mount["name"]]["persistentVolumeClaim"]
        registry_pod = workload(objs, "registry")["spec"]["template"]["spec"]
        assert claim["claimName"] in {v["persistentVolumeClaim"]["claimName"]
                                      for v in registry_pod["volumes"]
                                      if "persistentVolumeClaim" in v}
        assert mount["readOnly"] is True and claim["readOnly"] is True
        assert mount["mountPath"] == front.storage_path
    # well under containerd's 5 minute progress timeout
    assert 0 < front.source_timeout_seconds <= 60
    assert front.claim_stale_seconds < front.source_timeout_seconds
    # the door is the front: GC fences through it, the mirror reads sources through it
    assert settings.gc.read_only_mode == "front"
    assert settings.mirror.source_through_front is True
    # source credentials: exactly the Secrets (and paths) the mirror mounts, nothing else
    mirror_pod = workload(objs, "mirror")["spec"]["template"]["spec"]

    def secret_mounts(p: Obj) -> set[tuple[str, str]]:
        secrets = {v["name"]: v["secret"]["secretName"] for v in p.get("volumes", [])
                   if "secret" in v}
        return {(secrets[m["name"]], m["mountPath"]) for m in p["containers"][0]["volumeMounts"]
                if m["name"] in secrets}

    assert secret_mounts(pod) == secret_mounts(mirror_pod)
    for path in [settings.mirror.docker_config_file,
                 *(r.password_file for r in settings.mirror.registries)]:
        if path:
            assert any(Path(path).is_relative_to(m) for _, m in secret_mounts(pod)), path


# -- RBAC -------------------------------------------------------------------------------------

# (ClusterRole | Role, apiGroup, resource, verb, resourceName or "") per process, from the
# calls each process's code makes (kube/ adapters, gc/sweeping.py); anything more is a
# privilege nobody asked for, anything less a process that fails in a cluster.
_WATCHED = [("", "pods"), ("apps", "replicasets"), ("apps", "daemonsets"),
            ("apps", "statefulsets"), ("batch", "jobs"), ("clusterregistry.io", "artifacts")]
# core/v1 Events (kube/events.py): create, and patch a repeat's count. Cluster-wide, because
# an Artifact is cluster-scoped and its Events live in "default", which kustomize's namespace
# would rewrite a Role in; GC's run events are on its Pod in its own namespace.
_RECORDS_EVENTS = {("ClusterRole", "", "events", v, "") for v in ("create", "patch")}
EXPECTED_RBAC: dict[str, set[tuple[str, str, str, str, str]]] = {
    "relay": {
        *{("ClusterRole", g, r, v, "") for g, r in _WATCHED for v in ("list", "watch")},
        ("Role", "coordination.k8s.io", "leases", "create", ""),
        ("Role", "coordination.k8s.io", "leases", "get", "clusterregistry-relay"),
        ("Role", "coordination.k8s.io", "leases", "update", "clusterregistry-relay"),
    },
    "tracker": set(),
    "reconciler": {
        *{("ClusterRole", "clusterregistry.io", "artifacts", v, "")
          for v in ("get", "list", "create")},
        ("ClusterRole", "clusterregistry.io", "artifacts/status", "patch", ""),
        *_RECORDS_EVENTS,
    },
    "mirror": {("ClusterRole", "", "secrets", "get", ""), *_RECORDS_EVENTS},
    "gc": {
        *{("ClusterRole", "clusterregistry.io", "artifacts", v, "") for v in ("get", "delete")},
        ("ClusterRole", "clusterregistry.io", "artifacts/status", "patch", ""),
        *{("Role", "batch", "jobs", v, "") for v in ("create", "list", "delete")},
        ("Role", "batch", "jobs/status", "get", ""),
        *_RECORDS_EVENTS,
    },
    "webhook": {
        ("ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", v,
         "clusterregistry-webhook") for v in ("get", "patch")
    },
    "registry": set(),
    "nats": set(),
    # the front reads no Kubernetes object: credentials from the mirror's settings
    "front": set(),
}


def granted(objs: list[Obj], account: str) -> set[tuple[str, str, str, str, str]]:
    """Every (role kind, group, resource, verb, resourceName) bound to the ServiceAccount."""
    roles = {(r["kind"], r["metadata"]["name"]): r for r in objs
             if r["kind"] in ("Role", "ClusterRole")}
    out: set[tuple[str, str, str, str, str]] = set()
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account
                   and s.get("namespace", binding["metadata"].get("namespace")) == NAMESPACE
                   for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]  # KeyError: bound to a role not shipped here
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            out.add((ref["kind"], group, resource, verb, name))
    return out


@pytest.mark.parametrize("name", BUILDS)
def test_rbac_is_least_privilege(build: Build, name: str) -> None:
    objs = build(name)
    for role in (o for o in objs if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], field)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["roleRef"]["name"].startswith("clusterregistry-")
    accounts = {a["metadata"]["name"]: a for a in of_kind(objs, "ServiceAccount")}
    assert set(accounts) == {f"clusterregistry-{w}" for w in WORKLOADS}
    for w in WORKLOADS:
        assert granted(objs, f"clusterregistry-{w}") == EXPECTED_RBAC[w], w
        # no API rights, no token in the pod
        pod = workload(objs, w)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"clusterregistry-{w}"
        assert pod["automountServiceAccountToken"] is bool(EXPECTED_RBAC[w]), w
        if not EXPECTED_RBAC[w]:
            assert accounts[f"clusterregistry-{w}"]["automountServiceAccountToken"] is False


# What the code calls, found in the source: kubernetes-asyncio's generated methods
# (`<verb>_[namespaced_]<resource>[_status]`), the Artifacts adapter's methods, and the raw
# list/watch of the kinds the relay relays. Each resource the code may name must be here.
PKG = ROOT / "pkg" / "clusterregistry"
_API_VERBS = {"read": "get", "list": "list", "create": "create", "patch": "patch",
              "replace": "update", "delete": "delete"}
_API_RESOURCES = {"lease": ("coordination.k8s.io", "leases"), "job": ("batch", "jobs"),
                  "secret": ("", "secrets"), "pod": ("", "pods"), "pod_log": ("", "pods/log"),
                  "config_map": ("", "configmaps"), "event": ("", "events"),
                  "mutating_webhook_configuration": ("admissionregistration.k8s.io",
                                                     "mutatingwebhookconfigurations")}
_ARTIFACT_METHODS = {"get": "get", "list": "list", "create": "create", "delete": "delete",
                     "patch_status": "patch"}


def api_calls(process: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes API call a process's code makes, with
    the kube/ adapters it imports."""
    sources = [p.read_text() for p in (PKG / process).glob("*.py")]
    own = "\n".join(sources)
    for adapter in ("admission", "events", "jobs", "leasing", "secrets", "watching"):
        if re.search(rf"clusterregistry\.kube\.{adapter}\b|from clusterregistry\.kube import "
                     rf"[^\n]*\b{adapter}\b", own):
            sources.append((PKG / "kube" / f"{adapter}.py").read_text())
    text = "\n".join(sources)
    calls = set()
    verbs = "|".join(_API_VERBS)
    found = re.findall(rf"\.({verbs})_namespaced_([a-z_]+?)(_status)?\(", text)
    found += [("list", r, "") for r in re.findall(r"\.list_([a-z_]+?)_for_all_namespaces\(", text)]
    found += re.findall(rf"\.({verbs})_(mutating_webhook_configuration|namespace|node|"
                        rf"custom_resource_definition)(_status)?\(", text)
    for verb, resource, status in found:
        assert resource in _API_RESOURCES, f"{process} calls {verb} {resource}: add it here"
        group, plural = _API_RESOURCES[resource]
        calls.add((group, plural + ("/status" if status else ""), _API_VERBS[verb]))
    if "Artifacts(" in own:
        for method in re.findall(r"\bartifacts\.(get|list|create|patch_status|delete)\(", own):
            resource = "artifacts/status" if method == "patch_status" else "artifacts"
            calls.add((kinds.ARTIFACT_GROUP, resource, _ARTIFACT_METHODS[method]))
    if re.search(r"\blist_page\(", own) and re.search(r"\bwatch\(", own):
        for resource in kinds.WATCHED.values():
            calls |= {(resource.group, resource.plural, v) for v in ("list", "watch")}
    return calls


def test_rbac_covers_every_api_call_the_code_makes(build: Build) -> None:
    """A process that starts calling something new fails here, not in a cluster."""
    objs = build("ha")
    found_any = set()
    for process in PROCESSES:
        needed = api_calls(process)
        rights = {(g, r, v) for _, g, r, v, _ in granted(objs, f"clusterregistry-{process}")}
        assert needed <= rights, f"{process} calls {needed - rights} without the right"
        found_any |= {process} if needed else set()
    # the scan sees the calls the table was written from
    assert found_any == {"relay", "reconciler", "mirror", "gc", "webhook"}


def test_only_the_mirror_reads_secrets(build: Build) -> None:
    objs = build("ha+components")
    for w in WORKLOADS:
        secrets = {g for g in granted(objs, f"clusterregistry-{w}") if g[2] == "secrets"}
        assert secrets == ({("ClusterRole", "", "secrets", "get", "")} if w == "mirror"
                           else set()), w


# -- the webhook configuration ----------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_the_mutating_webhook_configuration(build: Build, name: str) -> None:
    objs = build(name)
    mwc = named(objs, "MutatingWebhookConfiguration", "clusterregistry-webhook")
    (hook,) = mwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["admissionReviewVersions"] == ["v1"]
    (condition,) = hook["matchConditions"]
    assert condition["expression"] == DEFAULT_MATCH_CONDITION
    # its own namespace is never sent to it
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": [NAMESPACE]}
    assert not selector_matches(hook["namespaceSelector"],
                                {"kubernetes.io/metadata.name": NAMESPACE})
    assert selector_matches(hook["namespaceSelector"], {"kubernetes.io/metadata.name": "nf"})
    assert not selector_matches(hook["objectSelector"], {"clusterregistry.io/mutate": "false"})
    resources = {(tuple(r["operations"]), tuple(r["resources"])) for r in hook["rules"]}
    assert resources == {(("CREATE",), ("pods",)), (("UPDATE",), ("pods/ephemeralcontainers",))}
    # the service it names exists and reaches the webhook's https port
    ref = hook["clientConfig"]["service"]
    assert ref["namespace"] == NAMESPACE and ref["path"] == "/mutate"
    service = named(objs, "Service", ref["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    webhook = workload(objs, "webhook")
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(webhook))
    (c,) = webhook["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in c["ports"]}


@pytest.mark.parametrize("name", BUILDS)
def test_the_webhook_serves_what_its_configuration_calls(
    build: Build, name: str, tmp_path: Path
) -> None:
    """Port, Service and configuration names, and where its certificate comes from: made at
    start (self-signed, caBundle patched through its RBAC) or cert-manager's mounted Secret."""
    objs = build(name)
    pod = workload(objs, "webhook")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    webhook = settings_of(objs, tmp_path, c).webhook
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert webhook.port == ports["https"]
    mwc = named(objs, "MutatingWebhookConfiguration", webhook.configuration_name)
    assert mwc["webhooks"][0]["clientConfig"]["service"]["name"] == webhook.service_name
    rights = granted(objs, pod["serviceAccountName"])
    injected = mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from")
    if webhook.self_signed:
        assert injected is None
        assert {("ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations",
                 verb, webhook.configuration_name) for verb in ("get", "patch")} <= rights
    else:
        assert injected, "neither self-signed nor a cert-manager CA"
        cert = named(objs, "Certificate", injected.split("/")[1])
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == cert["spec"]["secretName"]
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        assert {Path(webhook.tls_cert_file), Path(webhook.tls_key_file)} == {
            Path(mount["mountPath"]) / "tls.crt", Path(mount["mountPath"]) / "tls.key"}
    assert webhook.self_signed == (name != "ha+components")


# -- overlays ---------------------------------------------------------------------------------


def test_dev_is_small(build: Build) -> None:
    objs = build("dev")
    for w in workloads(objs):
        assert w["spec"]["replicas"] == 1, component(w)
    assert not of_kind(objs, "HorizontalPodAutoscaler")
    assert not of_kind(objs, "PodDisruptionBudget")
    (claim,) = of_kind(objs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert parse_quantity(claim["spec"]["resources"]["requests"]["storage"]) <= 10 * 2**30
    for w in workloads(objs):
        assert "nodeSelector" not in w["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", ["ha", "ha+components", "ha+large"])
class TestHighAvailability:
    """AOSM's HA promises, one by one, on the built ha overlay."""

    def test_at_least_three_replicas(self, build: Build, name: str) -> None:
        for w in workloads(build(name)):
            assert w["spec"]["replicas"] >= 3, component(w)

    def test_rolling_updates_one_pod_at_a_time(self, build: Build, name: str) -> None:
        for w in workloads(build(name)):
            if w["kind"] == "Deployment":
                strategy = w["spec"]["strategy"]
                assert strategy["type"] == "RollingUpdate"
                assert strategy["rollingUpdate"]["maxUnavailable"] == 1
            else:  # StatefulSet: RollingUpdate replaces one pod at a time
                assert w["spec"]["updateStrategy"]["type"] == "RollingUpdate"

    def test_hpa_min_3_max_5_at_80_percent(self, build: Build, name: str) -> None:
        objs = build(name)
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h
                for h in of_kind(objs, "HorizontalPodAutoscaler")}
        assert set(hpas) == {f"clusterregistry-{c}" for c in AUTOSCALED}
        for target, hpa in hpas.items():
            spec = hpa["spec"]
            assert spec["scaleTargetRef"]["kind"] == "Deployment"
            named(objs, "Deployment", target)
            assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 5)
            metrics = {(m["resource"]["name"], m["resource"]["target"]["type"],
                        m["resource"]["target"]["averageUtilization"])
                       for m in spec["metrics"] if m["type"] == "Resource"}
            assert metrics == {("cpu", "Utilization", 80), ("memory", "Utilization", 80)}
            assert len(spec["metrics"]) == 2

    def test_pdb_min_available_2_for_every_workload(self, build: Build, name: str) -> None:
        objs = build(name)
        pdbs = of_kind(objs, "PodDisruptionBudget")
        for w in workloads(objs):
            covering = [p for p in pdbs if selector_matches(p["spec"]["selector"], pod_labels(w))]
            assert len(covering) == 1, component(w)
            assert covering[0]["spec"]["minAvailable"] == 2
            assert "maxUnavailable" not in covering[0]["spec"]
        # each budget selects exactly one workload's pods
        for p in pdbs:
            assert sum(selector_matches(p["spec"]["selector"], pod_labels(w))
                       for w in workloads(objs)) == 1

    def test_soft_anti_affinity_on_hostname(self, build: Build, name: str) -> None:
        for w in workloads(build(name)):
            anti = w["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
            (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            assert term["weight"] == 100
            assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            # it spreads this workload's own pods, and only those
            for other in workloads(build(name)):
                assert selector_matches(term["podAffinityTerm"]["labelSelector"],
                                        pod_labels(other)) == (other is w)

    def test_the_front_is_spread_over_nodes_and_zones(self, build: Build, name: str) -> None:
        """Every pull goes through the front: its replicas spread evenly over nodes and
        zones, softly (a node without room or a one-zone cluster still runs all three)."""
        objs = build(name)
        front = workload(objs, "front")
        constraints = {s["topologyKey"]: s
                       for s in front["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for spread in constraints.values():
            assert spread["maxSkew"] == 1
            assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
            for other in workloads(objs):
                assert selector_matches(spread["labelSelector"], pod_labels(other)) == (
                    other is front)

    def test_system_node_pool(self, build: Build, name: str) -> None:
        key, value = SYSTEM_POOL
        for w in workloads(build(name)):
            pod = w["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == {key: value}, component(w)
            assert {"key": "CriticalAddonsOnly", "operator": "Exists",
                    "effect": "NoSchedule"} in pod["tolerations"]

    def test_registry_volume_rwx_on_nexus_shared(self, build: Build, name: str) -> None:
        (claim,) = of_kind(build(name), "PersistentVolumeClaim")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["storageClassName"] == "nexus-shared"
        assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"

    def test_nats_is_a_three_node_cluster_with_r3_streams(
        self, build: Build, name: str, tmp_path: Path
    ) -> None:
        objs = build(name)
        nats = workload(objs, "nats")
        assert nats["spec"]["replicas"] == 3
        assert settings_of(objs, tmp_path).nats.stream_replicas == 3
        (volume,) = [v for v in nats["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
        conf = named(objs, "ConfigMap", volume["configMap"]["name"])["data"]["nats.conf"]
        headless = named(objs, "Service", nats["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        cluster_port = {p["name"]: p["port"] for p in headless["spec"]["ports"]}["cluster"]
        routes = re.findall(r"nats://([a-z0-9.-]+):(\d+)", conf.split("cluster {", 1)[1])
        sts = nats["metadata"]["name"]
        assert sorted(routes) == [
            (f"{sts}-{i}.{headless['metadata']['name']}", str(cluster_port)) for i in range(3)]
        assert "jetstream" in conf


def test_optional_components_are_not_in_the_overlays(build: Build) -> None:
    for name in ("dev", "ha"):
        kinds = {o["kind"] for o in build(name)}
        assert not kinds & (FOREIGN_KINDS | {"NetworkPolicy"}), name


# -- optional components ----------------------------------------------------------------------


def test_cert_manager_component(build: Build) -> None:
    objs = build("ha+components")
    mwc = named(objs, "MutatingWebhookConfiguration", "clusterregistry-webhook")
    injected = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    namespace, cert_name = injected.split("/")
    cert = named(objs, "Certificate", cert_name)
    assert cert["metadata"]["namespace"] == namespace
    service = mwc["webhooks"][0]["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["usages"] == ["server auth"]
    # issued by a CA Issuer whose CA comes from a self-signed Certificate in the build
    issuer = named(objs, "Issuer", cert["spec"]["issuerRef"]["name"])
    ca_cert = [c for c in of_kind(objs, "Certificate")
               if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]]
    assert len(ca_cert) == 1 and ca_cert[0]["spec"]["isCA"] is True
    assert "selfSigned" in named(objs, "Issuer", ca_cert[0]["spec"]["issuerRef"]["name"])["spec"]
    # the webhook mounts the serving certificate's Secret as a directory (rotations reach it)
    pod = workload(objs, "webhook")["spec"]["template"]["spec"]
    (tls,) = [v for v in pod["volumes"] if "secret" in v]
    assert tls["secret"]["secretName"] == cert["spec"]["secretName"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == tls["name"]]
    assert "subPath" not in mount and mount["readOnly"] is True


def test_service_monitor_scrapes_every_process_and_the_registry(build: Build) -> None:
    objs = build("ha+components")
    (monitor,) = of_kind(objs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    selected = [s for s in of_kind(objs, "Service")
                if selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    scraped = set()
    for svc in selected:
        (port,) = [p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"]]
        for w in workloads(objs):
            if selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(w)):
                c = w["spec"]["template"]["spec"]["containers"][0]
                assert port["targetPort"] in {p["name"] for p in c["ports"]}
                scraped.add(component(w))
    assert scraped == set(DEPLOYMENTS)


def test_network_policies(build: Build) -> None:
    """Only the front, the mirror and GC reach distribution; the front is open to the whole
    cluster (nodes, every pod, its peers); only addresses (the API server's) reach the
    webhook; every pod is covered by a default deny."""
    objs = build("ha+components")
    policies = of_kind(objs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    pods = {component(w): pod_labels(w) for w in workloads(objs)}

    def peers_into(target: str, port: int) -> tuple[set[str], list[Obj]]:
        """Workloads and ipBlocks allowed to reach `target` on `port`."""
        allowed: set[str] = set()
        blocks: list[Obj] = []
        for policy in policies:
            if not selector_matches(policy["spec"]["podSelector"], pods[target]):
                continue
            for rule in policy["spec"].get("ingress", []):
                if port not in {p["port"] for p in rule.get("ports", [])}:
                    continue
                for peer in rule["from"]:
                    if "ipBlock" in peer:
                        blocks.append(peer["ipBlock"])
                    elif "namespaceSelector" in peer:
                        blocks.append(peer)
                    else:
                        allowed |= {n for n, labels in pods.items()
                                    if selector_matches(peer["podSelector"], labels)}
        return allowed, blocks

    writers, blocks = peers_into("registry", 5000)
    assert writers == {"front", "mirror", "gc"}
    assert blocks == []  # the nodes pull through the front
    # the front: kubelet pulls come from the node network (not from a pod), the mirror reads
    # sources through it, any pod may pull, and a replica streams to its peers
    pullers, front_blocks = peers_into("front", 5000)
    assert pullers == {"front"}
    assert {"namespaceSelector": {}} in front_blocks  # every pod of every namespace
    assert [b for b in front_blocks if "cidr" in b] and len(front_blocks) == 2  # the nodes
    front = workload(objs, "front")["spec"]["template"]["spec"]["containers"][0]
    assert 5000 in {p["containerPort"] for p in front["ports"]}
    callers, api_blocks = peers_into("webhook", 8443)
    assert callers == set()
    assert len(api_blocks) == 1 and "cidr" in api_blocks[0]
    clients, _ = peers_into("nats", 4222)
    assert clients == set(PROCESSES)
    routes, _ = peers_into("nats", 6222)
    assert routes == {"nats"}
    # the ports the policies name are the ones the containers listen on
    webhook = workload(objs, "webhook")["spec"]["template"]["spec"]["containers"][0]
    assert 8443 in {p["containerPort"] for p in webhook["ports"]}


def test_dashboard_config_map(build: Build) -> None:
    objs = build("ha")
    (cm,) = [c for c in of_kind(objs, "ConfigMap")
             if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert cm["data"]["clusterregistry.json"] == (DEPLOY / "grafana" /
                                                  "clusterregistry.json").read_text()


# -- Pod Security Admission -------------------------------------------------------------------

# Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards): the
# checks a pod must pass at each level, as the namespace label enforces them.
_BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                          "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP",
                          "SETUID", "SYS_CHROOT"}
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}


def pod_security_violations(pod: Obj, level: str) -> list[str]:
    out = []
    ctx = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            out.append(f"hostPath volume {volume['name']}")
        if level == "restricted" and not set(volume) - {"name"} <= _RESTRICTED_VOLUMES:
            out.append(f"volume type of {volume['name']}")
    for c in containers(pod):
        cctx = c.get("securityContext") or {}
        caps = cctx.get("capabilities") or {}
        if cctx.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{c['name']}: hostPort")
        if set(caps.get("add") or []) - _BASELINE_CAPABILITIES:
            out.append(f"{c['name']}: capabilities beyond baseline")
        if level != "restricted":
            continue
        if cctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation not false")
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{c['name']}: capabilities not dropped")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: capabilities added")
        if cctx.get("runAsNonRoot", ctx.get("runAsNonRoot")) is not True:
            out.append(f"{c['name']}: runAsNonRoot not true")
        if cctx.get("runAsUser", ctx.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = (cctx.get("seccompProfile") or ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile {seccomp}")
    return out


def test_pod_security_catches_what_it_should() -> None:
    """The checker itself: a hardened pod passes restricted, a bare one only baseline."""
    bare = {"containers": [{"name": "c", "image": "x"}]}
    assert pod_security_violations(bare, "baseline") == []
    assert len(pod_security_violations(bare, "restricted")) == 4
    privileged = {"hostNetwork": True, "containers": [
        {"name": "c", "image": "x", "securityContext": {"privileged": True}}]}
    assert len(pod_security_violations(privileged, "baseline")) == 2


@pytest.mark.parametrize("name", BUILDS)
def test_every_pod_passes_the_namespace_pod_security_level(
    build: Build, name: str, tmp_path: Path
) -> None:
    """The namespace enforces a Pod Security level; every pod the deployment creates passes
    it, including the sweep Job GC creates at run time (gc.sweeping builds it)."""
    objs = build(name)
    level = named(objs, "Namespace", NAMESPACE)["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"]
    for w in workloads(objs):
        assert pod_security_violations(w["spec"]["template"]["spec"], "restricted") == [], (
            component(w))
    settings = settings_of(objs, tmp_path)
    job = sweep_job("r1", namespace=NAMESPACE, image=settings.gc.job_image,
                    volume_claim=settings.gc.job_volume_claim,
                    config_map=settings.gc.job_config_map,
                    storage_path=settings.gc.storage_path, timeout=60)
    assert pod_security_violations(job["spec"]["template"]["spec"], level) == []


def test_a_read_write_once_volume_keeps_its_users_on_one_node(build: Build) -> None:
    """dev's registry volume is ReadWriteOnce: GC (which mounts it to measure usage) must run
    on the registry's node, and pins its sweep Job there (REGISTRY_NODE_NAME)."""
    objs = build("dev")
    (claim,) = of_kind(objs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    registry = workload(objs, "registry")
    for w in workloads(objs):
        pod = w["spec"]["template"]["spec"]
        claims = [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
        if not claims or w is registry:
            continue
        (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert selector_matches(term["labelSelector"], pod_labels(registry))
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["REGISTRY_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
