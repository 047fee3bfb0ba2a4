"""kubectl 1.37's generators against kubesim: they send protobuf, kubesim decodes it.

`kubectl create configmap|secret|deployment|...` and `kubectl debug --copy-to` build typed
objects and send them as application/vnd.kubernetes.protobuf, without a JSON fallback. Each
test runs the real command and checks that what kubesim decoded is exactly what the same
command prints with `--dry-run=client -o json` (the JSON it would have sent), and that the
stored object carries all of it.
"""

from __future__ import annotations

import copy
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubesim import protobufs
from kubesim.certificates import CertificateAuthority
from kubesim.running import Cluster
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration


class Decoded:
    """Every object kubesim decoded from a protobuf body, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.objects: list[dict[str, Any]] = []
        real = protobufs.decode

        def recording(body: bytes) -> dict[str, Any]:
            obj = real(body)
            self.objects.append(copy.deepcopy(obj))  # before defaulting touches it
            return obj

        monkeypatch.setattr(protobufs, "decode", recording)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Decoded:
    return Decoded(monkeypatch)


def _dry_run(args: list[str]) -> list[str]:
    # the flags go before `--`, after which come the container's command
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], "--dry-run=client", "-o", "json", *args[cut:]]


def _assert_carries(stored: Any, sent: Any, *, path: str = "") -> None:
    """Everything the client sent is in the stored object (which defaulting may extend).
    An empty object sent (`"status": {}`, `"resources": {}`) carries nothing."""
    if isinstance(sent, dict):
        assert isinstance(stored, dict), f"{path}: {stored!r} is not an object"
        for key, value in sent.items():
            if value == {}:
                continue
            assert key in stored, f"{path}.{key} was sent but not stored"
            _assert_carries(stored[key], value, path=f"{path}.{key}")
    elif isinstance(sent, list):
        assert isinstance(stored, list) and len(stored) == len(sent), f"{path}: {stored!r}"
        for i, (got, want) in enumerate(zip(stored, sent, strict=True)):
            _assert_carries(got, want, path=f"{path}[{i}]")
    else:
        assert stored == sent, f"{path}: stored {stored!r}, sent {sent!r}"


async def _create_like_json(kubectl: Kubectl, decoded: Decoded, *, create: list[str],
                            get: list[str]) -> dict[str, Any]:
    """Run a generator and return the object kubesim stored, having checked that kubesim
    decoded from its protobuf body exactly the JSON the command prints with
    --dry-run=client, and stored all of it."""
    sent = (await kubectl.run(*_dry_run(create))).json()
    before = len(decoded.objects)
    await kubectl.run(*create)
    assert decoded.objects[before:] == [sent]
    stored: dict[str, Any] = (await kubectl.run("get", *get, "-o", "json")).json()
    _assert_carries(stored, sent)
    return stored


def _files(tmp_path: Path) -> dict[str, str]:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(250, 256)) + b"\x00\xc3(")  # not UTF-8: binaryData
    text = tmp_path / "text.txt"
    text.write_text("k=v\n")
    ca = CertificateAuthority.create("generators-ca")
    cert, key = ca.issue(common_name="edge.example.com",
                         hosts=["edge.example.com"]).write(tmp_path, "tls")
    return {"blob": str(blob), "text": str(text), "cert": str(cert), "key": str(key)}


GENERATORS: dict[str, tuple[list[str], list[str]]] = {
    "namespace": (["create", "namespace", "team-a"], ["namespace", "team-a"]),
    "configmap": (
        ["create", "configmap", "settings", "--from-literal=mode=edge",
         "--from-literal=replicas=3", "--from-file={blob}", "--from-file={text}"],
        ["configmap", "settings"],
    ),
    "secret-generic": (
        ["create", "secret", "generic", "creds", "--from-literal=user=admin",
         "--from-literal=pw=s3cr=t!", "--from-file={blob}", "--type=example.com/creds"],
        ["secret", "creds"],
    ),
    "secret-docker-registry": (
        ["create", "secret", "docker-registry", "pull", "--docker-server=registry.example.com",
         "--docker-username=u", "--docker-password=p", "--docker-email=u@example.com"],
        ["secret", "pull"],
    ),
    "secret-tls": (
        ["create", "secret", "tls", "edge-tls", "--cert={cert}", "--key={key}"],
        ["secret", "edge-tls"],
    ),
    "serviceaccount": (["create", "serviceaccount", "robot"], ["serviceaccount", "robot"]),
    "deployment": (
        ["create", "deployment", "web", "--image=registry.example.com/nf/upf:1.2",
         "--replicas=3", "--port=8080"],
        ["deployment", "web"],
    ),
    "deployment-two-images": (
        ["create", "deployment", "pair", "--image=nginx:1.27", "--image=busybox:1.36"],
        ["deployment", "pair"],
    ),
    "job": (
        ["create", "job", "once", "--image=busybox", "--", "sh", "-c", "echo hi"],
        ["job", "once"],
    ),
    "cronjob": (
        ["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *",
         "--restart=Never", "--", "date"],
        ["cronjob", "tick"],
    ),
}


@pytest.mark.parametrize("name", list(GENERATORS))
async def test_generator_stores_what_it_would_send_as_json(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded, tmp_path: Path, name: str
) -> None:
    create, get = GENERATORS[name]
    files = _files(tmp_path)
    await _create_like_json(kubectl, decoded, create=[arg.format(**files) for arg in create],
                            get=get)


async def test_replicas_zero_survives_the_protobuf_pointer(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded
) -> None:
    # replicas is a *int32: present-and-zero must not be mistaken for unset (defaulted to 1)
    stored = await _create_like_json(
        kubectl, decoded, create=["create", "deployment", "idle", "--image=nginx", "--replicas=0"],
        get=["deployment", "idle"])
    assert stored["spec"]["replicas"] == 0


async def test_secret_bytes_round_trip(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    stored = await _create_like_json(
        kubectl, decoded,
        create=["create", "secret", "generic", "blob", f"--from-file={files['blob']}"],
        get=["secret", "blob"])
    assert stored["data"] == {"blob.bin": "+vv8/f7/AMMo"}
    raw = await kubectl.run("get", "secret", "blob", "-o", "jsonpath={.data.blob\\.bin}")
    assert raw.stdout == "+vv8/f7/AMMo"


async def test_job_from_cronjob_carries_its_owner_reference(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded
) -> None:
    create, get = GENERATORS["cronjob"]
    cronjob = await _create_like_json(kubectl, decoded, create=create, get=get)
    job = await _create_like_json(kubectl, decoded,
                                  create=["create", "job", "manual-1", "--from=cronjob/tick"],
                                  get=["job", "manual-1"])
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
        "uid": cronjob["metadata"]["uid"], "controller": True,
    }]
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"


RICH_POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "rich", "labels": {"app": "rich", "tier": "edge"},
                 "annotations": {"note": "x"}},
    "spec": {
        "initContainers": [{"name": "init", "image": "busybox:1.36",
                            "command": ["sh", "-c", "true"]}],
        "containers": [{
            "name": "app", "image": "registry.example.com/nf/upf:1.2", "workingDir": "/srv",
            "args": ["--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                      {"containerPort": 9090, "protocol": "UDP", "hostPort": 9090}],
            "env": [
                {"name": "PLAIN", "value": "v"}, {"name": "EMPTY"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                            "fieldPath": "spec.nodeName"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {
                    "containerName": "app", "resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "CM", "valueFrom": {"configMapKeyRef": {
                    "name": "settings", "key": "mode", "optional": False}}},
                {"name": "SEC", "valueFrom": {"secretKeyRef": {
                    "name": "creds", "key": "pw", "optional": True}}},
            ],
            "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}},
                        {"secretRef": {"name": "creds", "optional": False}}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                          "requests": {"cpu": "100m", "memory": "64Mi",
                                       "ephemeral-storage": "1Gi"}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"},
                             {"name": "config", "mountPath": "/etc/app", "readOnly": True,
                              "subPath": "app"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP",
                                          "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                              "initialDelaySeconds": 5, "periodSeconds": 10,
                              "failureThreshold": 3},
            "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "successThreshold": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}},
                          "postStart": {"exec": {"command": ["echo", "up"]}}},
            "imagePullPolicy": "IfNotPresent",
            "securityContext": {
                "runAsUser": 1000, "runAsGroup": 0, "runAsNonRoot": True,
                "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "stdin": True, "tty": True,
        }],
        "volumes": [
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "config", "configMap": {
                "name": "settings", "items": [{"key": "mode", "path": "app/mode", "mode": 256}],
                "defaultMode": 420, "optional": True}},
            {"name": "certs", "secret": {"secretName": "creds", "defaultMode": 256}},
            {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "token", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token",
                                         "audience": "api"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                {"secret": {"name": "creds", "optional": True}},
            ]}},
        ],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": 3600, "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["10.0.0.10"], "searches": ["svc.cluster.local"],
                      "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "serviceAccountName": "default", "automountServiceAccountToken": False,
        "hostNetwork": False, "hostname": "rich", "subdomain": "edge",
        "securityContext": {
            "fsGroup": 2000, "supplementalGroups": [3000, 4000], "runAsNonRoot": True,
            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        "imagePullSecrets": [{"name": "pull"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In",
                                           "values": ["a", "b"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [
                        {"key": "ssd", "operator": "Exists"}]}}],
            },
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app": "rich"}},
                    "topologyKey": "kubernetes.io/hostname"}}]},
        },
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
        ],
        "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["registry.local"]}],
        "priority": 0, "enableServiceLinks": False,
        "readinessGates": [{"conditionType": "example.com/ready"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                    "values": ["rich"]}]},
        }],
    },
}


async def test_debug_copy_sends_every_pod_field_as_protobuf(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded
) -> None:
    # kubectl reads the stored pod as JSON and sends its copy through client-go's typed Pod
    # client: Go's own protobuf encoding of the whole PodSpec, to decode back to the same JSON
    await kubectl.run("create", "-f", "-", stdin=json.dumps(RICH_POD))
    original = (await kubectl.run("get", "pod", "rich", "-o", "json")).json()
    await kubectl.run("debug", "rich", "--copy-to=rich-copy", "--container=dbg",
                      "--image=busybox", "--keep-liveness", "--keep-readiness",
                      "--keep-startup", "--keep-labels", "--keep-annotations")
    [sent] = decoded.objects
    assert sent["metadata"] == {"name": "rich-copy", "namespace": "default",
                                "labels": RICH_POD["metadata"]["labels"],
                                "annotations": RICH_POD["metadata"]["annotations"]}
    expected = dict(original["spec"])
    del expected["hostNetwork"]  # false: encoding/json's omitempty leaves it out
    expected["shareProcessNamespace"] = True
    *containers, debugger = sent["spec"]["containers"]
    assert containers == original["spec"]["containers"]
    assert debugger["name"] == "dbg" and debugger["image"] == "busybox"
    assert sent["spec"] == {**expected, "containers": [*containers, debugger]}
    stored = (await kubectl.run("get", "pod", "rich-copy", "-o", "json")).json()
    _assert_carries(stored, sent)


async def test_foreground_delete_of_a_generated_object(
    kube_api: Cluster, kubectl: Kubectl, decoded: Decoded
) -> None:
    # kubectl 1.37 sends DeleteOptions as JSON (its resource helper, not a typed client), so
    # this only pins that the pair works end to end
    create, get = GENERATORS["deployment"]
    await _create_like_json(kubectl, decoded, create=create, get=get)
    out = await kubectl.run("delete", "deployment", "web", "--cascade=foreground")
    assert 'deployment.apps "web" deleted' in out.stdout
    gone = await kubectl.run("get", "deployment", "web", check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr


# -- the HTTP layer, with bodies built here ---------------------------------------------------


def _ld(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128  # one-byte lengths are all these bodies need
    return bytes([number << 3 | 2, len(payload)]) + payload


def _body(api_version: str, kind: str, *, raw: bytes) -> bytes:
    type_meta = _ld(1, api_version.encode()) + _ld(2, kind.encode())
    return protobufs.MAGIC + _ld(1, type_meta) + _ld(2, raw)


async def _post(cluster: Cluster, path: str, *, body: bytes) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(cluster.ca_path))
    headers = {"Content-Type": protobufs.MEDIA_TYPE, "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(cluster.url + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_protobuf_bodies_over_http(kube_api: Cluster) -> None:
    configmaps = "/api/v1/namespaces/default/configmaps"
    data = _ld(2, _ld(1, b"k") + _ld(2, b"v"))
    status, created = await _post(
        kube_api, configmaps, body=_body("v1", "ConfigMap", raw=_ld(1, _ld(1, b"raw")) + data))
    assert status == 201
    assert created["data"] == {"k": "v"} and created["metadata"]["uid"]

    status, refused = await _post(
        kube_api, configmaps, body=_body("v1", "Service", raw=_ld(1, _ld(1, b"svc"))))
    assert status == 415
    assert refused["reason"] == "UnsupportedMediaType"
    assert "Service" in refused["message"]

    truncated = _body("v1", "ConfigMap", raw=b"\x0a\x7f")[:-1]  # raw claims 2 bytes, has 1
    status, corrupt = await _post(kube_api, configmaps, body=truncated)
    assert status == 400
    assert corrupt["reason"] == "BadRequest"

    status, plain = await _post(kube_api, configmaps, body=b'{"kind": "ConfigMap"}')
    assert status == 400 and "expected prefix" in plain["message"]
