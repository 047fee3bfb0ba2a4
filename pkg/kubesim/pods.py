"""Validation and defaulting of pods and pod templates, as kube-apiserver does them.

These follow pkg/apis/core/validation and the core/v1 defaulters (plus the
bits of the ServiceAccount admission plugin and the pod strategy that every
pod shows), including their messages and field paths, because clients and
operators react to exactly those. Validation assumes the object was defaulted
first, as kube-apiserver does: a field that defaulting always fills is checked
when present and not reported when absent.
"""

from __future__ import annotations

import copy
import math
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

from kubesim.fielderrors import (
    IS_NEGATIVE,
    FieldErrors,
    dns1123_label,
    dns1123_subdomain,
    get_dict,
    get_int,
    get_list,
    get_str,
    go_json,
    inclusive_range_error,
    label_value,
    port_name,
    qualified_name,
    validate_annotations,
    validate_labels,
)

MAX_INT32 = 2**31 - 1
Obj = dict[str, Any]

# --- image references (github.com/distribution/reference) ---------------------------------

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)
_HEX64 = re.compile(r"[a-f0-9]{64}")


@lru_cache(maxsize=4096)
def default_pull_policy(image: str) -> str:
    """SetDefaults_Container: Always for ':latest' or no tag (and no digest), else IfNotPresent.

    The reference is parsed as the kubelet parses it, so 'registry:5000/app' has no tag
    (the port belongs to the host) and an unparsable reference yields IfNotPresent.
    """
    match = _IMAGE_REFERENCE.fullmatch(image)
    if match is None or _HEX64.fullmatch(image) or len(match["name"]) > 255:
        return "IfNotPresent"
    tag, digest = match["tag"], match["digest"]
    if tag == "latest" or (tag is None and digest is None):
        return "Always"
    return "IfNotPresent"


# --- quantities (k8s.io/apimachinery/pkg/api/resource) ------------------------------------

_QUANTITY = re.compile(r"([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)")
_QUANTITY_MESSAGE = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"  # noqa: E501
_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}


def parse_quantity(value: Any) -> int | None:
    """A quantity in nano-units (kube keeps at most nano precision, rounding up)."""
    if isinstance(value, str):
        return _parse_quantity_text(value)
    if type(value) is int:
        return value * 10**9
    if type(value) is float:
        return math.ceil(Fraction(value) * 10**9)
    return None


@lru_cache(maxsize=4096)
def _parse_quantity_text(text: str) -> int | None:
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        amount = Fraction(number)
    except ValueError:
        return None
    if suffix in _SUFFIXES:
        return math.ceil(amount * _SUFFIXES[suffix] * 10**9)
    if suffix[:1] in ("e", "E"):
        try:
            return math.ceil(amount * Fraction(10) ** int(suffix[1:]) * 10**9)
        except ValueError:
            return None
    return None


# --- pod defaulting (pkg/apis/core/v1/defaults.go and the ServiceAccount admission) --------

_PROBE_DEFAULTS = (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                   ("failureThreshold", 3))
_VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret",
    "nfs", "iscsi", "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs",
    "quobyte", "downwardAPI", "fc", "flexVolume", "configMap", "azureFile", "vsphereVolume",
    "photonPersistentDisk", "portworxVolume", "azureDisk", "storageos", "projected", "scaleIO",
    "csi", "ephemeral", "image",
)


_VOLUME_SOURCE_ORDER = {source: i for i, source in enumerate(_VOLUME_SOURCES)}


def default_pod(pod: Obj) -> None:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or ():
            if not isinstance(container, dict):
                continue
            resources = container.get("resources")
            # requests default to limits for the resources that have only a limit
            if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
                requests = resources.setdefault("requests", {})
                if isinstance(requests, dict):
                    for name, quantity in resources["limits"].items():
                        requests.setdefault(name, quantity)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            for container in spec.get(key) or ():
                for port in _ports(container):
                    if not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    # the ServiceAccount admission plugin, not a defaulter, names the default account
    if not spec.get("serviceAccountName") and not spec.get("serviceAccount"):
        spec["serviceAccountName"] = "default"
    _default_pod_spec(spec)
    status = pod.get("status")
    if status is None:
        status = pod["status"] = {}
    # the pod strategy's PrepareForCreate: a new pod is Pending, with its QoS class
    if isinstance(status, dict):
        if not status.get("phase"):
            status["phase"] = "Pending"
        if not status.get("qosClass"):
            status["qosClass"] = pod_qos(spec)


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        _default_pod_spec(template["spec"])


def _default_pod_spec(spec: Obj) -> None:
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    # v1 conversion: serviceAccount is the deprecated twin of serviceAccountName
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if account:
        spec["serviceAccountName"] = account
        spec["serviceAccount"] = account
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or ():
            if isinstance(container, dict):
                _default_container(container)
    for volume in spec.get("volumes") or ():
        if isinstance(volume, dict):
            _default_volume(volume)


def _default_container(container: Obj) -> None:
    if not container.get("terminationMessagePath"):
        container["terminationMessagePath"] = "/dev/termination-log"
    if not container.get("terminationMessagePolicy"):
        container["terminationMessagePolicy"] = "File"
    if not container.get("imagePullPolicy"):
        image = container.get("image")
        container["imagePullPolicy"] = default_pull_policy(image if isinstance(image, str) else "")
    if container.get("resources") is None:
        container["resources"] = {}
    for port in container.get("ports") or ():
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if isinstance(probe, dict):
            for field, value in _PROBE_DEFAULTS:
                if not probe.get(field):
                    probe[field] = value
            _default_http_get(probe.get("httpGet"))
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _default_http_get(lifecycle[hook].get("httpGet"))
    for env in container.get("env") or ():
        if isinstance(env, dict) and isinstance(env.get("valueFrom"), dict):
            ref = env["valueFrom"].get("fieldRef")
            if isinstance(ref, dict) and not ref.get("apiVersion"):
                ref["apiVersion"] = "v1"


def _default_http_get(action: Any) -> None:
    if isinstance(action, dict):
        if not action.get("path"):
            action["path"] = "/"
        if not action.get("scheme"):
            action["scheme"] = "HTTP"


def _default_volume(volume: Obj) -> None:
    if not any(volume.get(source) is not None for source in _VOLUME_SOURCES):
        volume["emptyDir"] = {}
        return
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        sub = volume.get(source)
        if isinstance(sub, dict) and sub.get("defaultMode") is None:
            sub["defaultMode"] = 420  # 0644
    for item in (volume.get("downwardAPI") or {}).get("items") or ():
        if isinstance(item, dict) and isinstance(item.get("fieldRef"), dict):
            item["fieldRef"].setdefault("apiVersion", "v1")
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        host_path["type"] = ""


def pod_qos(spec: Obj) -> str:
    """qos.GetPodQOS: Guaranteed, Burstable or BestEffort from cpu and memory."""
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    guaranteed = True
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or ():
            resources = container.get("resources") if isinstance(container, dict) else None
            resources = resources if isinstance(resources, dict) else {}
            for name, raw in (resources.get("requests") or {}).items():
                quantity = parse_quantity(raw)
                if name in ("cpu", "memory") and quantity is not None and quantity > 0:
                    requests[name] = requests.get(name, 0) + quantity
            found = set()
            for name, raw in (resources.get("limits") or {}).items():
                quantity = parse_quantity(raw)
                if name in ("cpu", "memory") and quantity is not None and quantity > 0:
                    found.add(name)
                    limits[name] = limits.get(name, 0) + quantity
            if found != {"cpu", "memory"}:
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and len(requests) == len(limits) and all(
            limits.get(name) == value for name, value in requests.items()):
        return "Guaranteed"
    return "Burstable"


# --- pod validation ------------------------------------------------------------------------

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_ENV_FIELD_PATHS = (
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
    "status.podIPs",
)
_SUBSCRIPTED_FIELD = re.compile(r"(metadata\.(?:labels|annotations))\['(.*)'\]")
# kube's own field paths for two volume types have a typo and a different case
_VOLUME_ERROR_NAMES = {"cephfs": "cephFS", "downwardAPI": "downwarAPI"}
_VOLUME_REQUIRED_NAMES = {"secret": "secretName", "configMap": "name",
                          "persistentVolumeClaim": "claimName", "hostPath": "path"}


def sub(obj: Any, key: str) -> Obj:
    """obj[key] when both are objects, else {} (for reading what was already checked)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


_NAME_FIELDS = (("serviceAccountName", dns1123_subdomain), ("nodeName", dns1123_subdomain),
                ("priorityClassName", dns1123_subdomain), ("hostname", dns1123_label),
                ("subdomain", dns1123_label))


def validate_pod(errs: FieldErrors, pod: Obj) -> None:
    spec = get_dict(errs, pod, "spec", path="")
    _validate_pod_spec(errs, spec, "spec", is_pod=True, extra_volumes=())
    for key in ("containers", "initContainers"):
        for i, container in enumerate(spec.get(key) or ()):
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image != image.strip():
                errs.invalid(f"spec.{key}[{i}].image", image,
                             "must not have leading or trailing whitespace")


def validate_pod_template(
    errs: FieldErrors, template: Any, path: str, *, extra_volumes: tuple[str, ...] = ()
) -> None:
    """ValidatePodTemplateSpec; its labels are reported at <path>.labels, as kube does."""
    if not isinstance(template, dict):
        template = {}
    meta = get_dict(errs, template, "metadata", path=path)
    validate_labels(errs, meta.get("labels"), f"{path}.labels")
    validate_annotations(errs, meta.get("annotations"), f"{path}.annotations")
    spec = get_dict(errs, template, "spec", path=path)
    _validate_pod_spec(errs, spec, f"{path}.spec", is_pod=False, extra_volumes=extra_volumes)
    if spec.get("ephemeralContainers"):
        errs.forbidden(f"{path}.spec.ephemeralContainers",
                       "ephemeral containers not allowed in pod template")


def _validate_pod_spec(
    errs: FieldErrors, spec: Obj, path: str, *, is_pod: bool, extra_volumes: tuple[str, ...]
) -> None:
    volumes = _validate_volumes(errs, get_list(errs, spec, "volumes", path=path), path)
    if extra_volumes:
        volumes.update(dict.fromkeys(extra_volumes, "persistentVolumeClaim"))
    containers = get_list(errs, spec, "containers", path=path)
    init_containers = get_list(errs, spec, "initContainers", path=path)
    ephemeral = get_list(errs, spec, "ephemeralContainers", path=path)
    names: set[str] = set()
    if not containers:
        errs.required(f"{path}.containers")
    host_ports: set[str] = set()
    for i, container in enumerate(containers):
        p = f"{path}.containers[{i}]"
        name = _validate_container(errs, container, p, volumes=volumes)
        if name in names:
            errs.duplicate(f"{p}.name", name)
        else:
            names.add(name)
        if isinstance(container, dict):
            if container.get("restartPolicy") is not None:
                errs.forbidden(f"{p}.restartPolicy", "may not be set for non-init containers")
            _check_host_ports(errs, container, path=f"{path}.containers", index=i, seen=host_ports)
    for i, container in enumerate(init_containers):
        p = f"{path}.initContainers[{i}]"
        name = _validate_container(errs, container, p, volumes=volumes)
        restart = container.get("restartPolicy") if isinstance(container, dict) else None
        if restart is not None and restart != "Always":
            errs.not_supported(f"{p}.restartPolicy", restart, ["Always"])
        if name in names:
            errs.duplicate(f"{p}.name", name)
        elif name:
            names.add(name)
        if isinstance(container, dict) and restart != "Always":
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if container.get(key) is not None:
                    errs.forbidden(f"{p}.{key}",
                                   "may not be set for init containers without "
                                   "restartPolicy=Always")
        if isinstance(container, dict):
            _check_host_ports(errs, container, path=f"{path}.initContainers", index=i, seen=set())
    other_names = set(names)
    for i, container in enumerate(ephemeral):
        p = f"{path}.ephemeralContainers[{i}]"
        name = _validate_container(errs, container, p, volumes=volumes)
        if name in names:
            errs.duplicate(f"{p}.name", name)
        else:
            names.add(name)
        target = container.get("targetContainerName") if isinstance(container, dict) else None
        if target and target not in other_names:
            errs.not_found(f"{p}.targetContainerName", target)
    if is_pod and spec.get("hostNetwork") is True:
        for i, container in enumerate(containers):
            for j, port in enumerate(_ports(container)):
                if port.get("hostPort") != port.get("containerPort"):
                    errs.invalid(f"{path}.containers[{i}].ports[{j}].hostPort",
                                 port.get("hostPort", 0),
                                 "must match `containerPort` when `hostNetwork` is true")
    restart_policy = get_str(errs, spec, "restartPolicy", path=path)
    if restart_policy and restart_policy not in _RESTART_POLICIES:
        errs.not_supported(f"{path}.restartPolicy", restart_policy, _RESTART_POLICIES)
    dns_policy = get_str(errs, spec, "dnsPolicy", path=path)
    if dns_policy and dns_policy not in _DNS_POLICIES:
        errs.not_supported(f"{path}.dnsPolicy", dns_policy, _DNS_POLICIES)
    if spec.get("nodeSelector"):
        validate_labels(errs, spec["nodeSelector"], f"{path}.nodeSelector")
    for i, secret in enumerate(get_list(errs, spec, "imagePullSecrets", path=path)):
        # kube checks only that nothing but a name is set: an empty name is accepted
        if not isinstance(secret, dict) or set(secret) - {"name"}:
            errs.invalid(f"{path}.imagePullSecrets[{i}]", secret, "only name may be set")
    if dns_policy == "None" and spec.get("dnsConfig") is None:
        errs.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
    for key, check in _NAME_FIELDS:
        value = spec.get(key)
        if value:
            if type(value) is not str:
                errs.decode(f"{path}.{key}", value, "string")
                continue
            for msg in check(value):
                errs.invalid(f"{path}.{key}", value, msg)
    deadline = get_int(errs, spec, "activeDeadlineSeconds", path=path)
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline,
                     inclusive_range_error(1, MAX_INT32))
    # any grace period, a negative one included, is accepted (and later treated as 1)
    get_int(errs, spec, "terminationGracePeriodSeconds", path=path)
    if spec.get("tolerations"):
        validate_tolerations(errs, get_list(errs, spec, "tolerations", path=path),
                             f"{path}.tolerations")


def _ports(container: Any) -> list[Obj]:
    if not isinstance(container, dict):
        return []
    ports = container.get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def _check_host_ports(
    errs: FieldErrors, container: Obj, *, path: str, index: int, seen: set[str]
) -> None:
    for j, port in enumerate(_ports(container)):
        host_port = port.get("hostPort")
        if not host_port:
            continue
        key = f"{port.get('protocol', '')}/{port.get('hostIP', '')}/{host_port}"
        if key in seen:
            errs.duplicate(f"{path}[{index}].ports[{j}].hostPort", key)
        seen.add(key)


def _validate_volumes(errs: FieldErrors, volumes: list[Any], spec_path: str) -> dict[str, str]:
    """Volume names must be unique DNS labels; returns name -> volume type of the valid ones."""
    known: dict[str, str] = {}
    for i, volume in enumerate(volumes):
        p = f"{spec_path}.volumes[{i}]"
        if not isinstance(volume, dict):
            errs.decode(p, volume, "core.Volume")
            continue
        before = len(errs.causes)
        sources = [k for k, v in volume.items() if v is not None and k in _VOLUME_SOURCE_ORDER]
        if len(sources) > 1:
            sources.sort(key=_VOLUME_SOURCE_ORDER.__getitem__)
        for extra in sources[1:]:
            errs.forbidden(f"{p}.{_VOLUME_ERROR_NAMES.get(extra, extra)}",
                           "may not specify more than 1 volume type")
        if not sources:
            errs.required(p, "must specify a volume type")
        else:
            source = volume[sources[0]]
            required = _VOLUME_REQUIRED_NAMES.get(sources[0])
            if required and isinstance(source, dict) and not source.get(required):
                errs.required(f"{p}.{sources[0]}.{required}")
        name = get_str(errs, volume, "name", path=p)
        if not name:
            errs.required(f"{p}.name")
        else:
            for msg in dns1123_label(name):
                errs.invalid(f"{p}.name", name, msg)
        if name in known:
            errs.duplicate(f"{p}.name", name)
        if len(errs.causes) == before:
            known[name] = sources[0] if sources else ""
    return known


def _validate_container(
    errs: FieldErrors, container: Any, path: str, *, volumes: dict[str, str]
) -> str:
    """validateContainerCommon; returns the container's name."""
    if not isinstance(container, dict):
        errs.decode(path, container, "core.Container")
        return ""
    name = get_str(errs, container, "name", path=path)
    if not name:
        errs.required(f"{path}.name")
    else:
        for msg in dns1123_label(name):
            errs.invalid(f"{path}.name", name, msg)
    if not get_str(errs, container, "image", path=path):
        errs.required(f"{path}.image")
    policy = get_str(errs, container, "terminationMessagePolicy", path=path)
    if policy and policy not in _TERMINATION_MESSAGE_POLICIES:
        errs.not_supported(f"{path}.terminationMessagePolicy", policy,
                           _TERMINATION_MESSAGE_POLICIES)
    if container.get("ports"):
        _validate_ports(errs, get_list(errs, container, "ports", path=path),
                        f"{path}.ports")
    if container.get("env"):
        _validate_env(errs, get_list(errs, container, "env", path=path), f"{path}.env")
    if container.get("volumeMounts"):
        _validate_mounts(errs, get_list(errs, container, "volumeMounts", path=path),
                         f"{path}.volumeMounts", volumes=volumes)
    pull = get_str(errs, container, "imagePullPolicy", path=path)
    if pull and pull not in _PULL_POLICIES:
        errs.not_supported(f"{path}.imagePullPolicy", pull, _PULL_POLICIES)
    resources = container.get("resources")
    if resources:
        _validate_resources(errs, resources, f"{path}.resources")
    return name


def _validate_ports(errs: FieldErrors, ports: list[Any], path: str) -> None:
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        if not isinstance(port, dict):
            errs.decode(p, port, "core.ContainerPort")
            continue
        name = get_str(errs, port, "name", path=p)
        if name:
            problems = port_name(name)
            for msg in problems:
                errs.invalid(f"{p}.name", name, msg)
            if not problems:
                if name in names:
                    errs.duplicate(f"{p}.name", name)
                names.add(name)
        container_port = get_int(errs, port, "containerPort", path=p)
        if not container_port:
            errs.required(f"{p}.containerPort")
        elif not 1 <= container_port <= 65535:
            errs.invalid(f"{p}.containerPort", container_port, inclusive_range_error(1, 65535))
        host_port = get_int(errs, port, "hostPort", path=p)
        if host_port and not 1 <= host_port <= 65535:
            errs.invalid(f"{p}.hostPort", host_port, inclusive_range_error(1, 65535))
        protocol = get_str(errs, port, "protocol", path=p)
        if "protocol" in port and not protocol:
            errs.required(f"{p}.protocol")
        elif protocol and protocol not in _PROTOCOLS:
            errs.not_supported(f"{p}.protocol", protocol, _PROTOCOLS)


def _validate_env(errs: FieldErrors, env: list[Any], path: str) -> None:
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        if not isinstance(var, dict):
            errs.decode(p, var, "core.EnvVar")
            continue
        name = get_str(errs, var, "name", path=p)
        if not name:
            errs.required(f"{p}.name")
        elif "=" in name or not (name.isascii() and name.isprintable()):
            errs.invalid(f"{p}.name", name, "a valid environment variable name must consist "
                                            "only of printable ASCII characters other than '='")
        value_from = var.get("valueFrom")
        if value_from is None:
            continue
        if not isinstance(value_from, dict):
            errs.decode(f"{p}.valueFrom", value_from, "core.EnvVarSource")
            continue
        sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef",
                               "secretKeyRef") if value_from.get(k) is not None]
        if not sources:
            errs.invalid(f"{p}.valueFrom", "", "must specify one of: `fieldRef`, "
                         "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
        elif var.get("value"):
            errs.invalid(f"{p}.valueFrom", "", "may not be specified when `value` is not empty")
        elif len(sources) > 1:
            errs.invalid(f"{p}.valueFrom", "",
                         "may not have more than one field specified at a time")
        field_ref = value_from.get("fieldRef")
        if isinstance(field_ref, dict):
            _validate_field_ref(errs, field_ref, f"{p}.valueFrom.fieldRef")
        for key in ("configMapKeyRef", "secretKeyRef"):
            ref = value_from.get(key)
            if isinstance(ref, dict) and not ref.get("key"):
                errs.required(f"{p}.valueFrom.{key}.key")


def _validate_field_ref(errs: FieldErrors, ref: Obj, path: str) -> None:
    if not ref.get("apiVersion"):
        errs.required(f"{path}.apiVersion")
        return
    field_path = get_str(errs, ref, "fieldPath", path=path)
    if not field_path:
        errs.required(f"{path}.fieldPath")
        return
    subscripted = _SUBSCRIPTED_FIELD.fullmatch(field_path)
    if subscripted:
        key = subscripted[2]
        if subscripted[1] == "metadata.annotations":
            key = key.lower()
        for msg in qualified_name(key):
            errs.invalid(path, key, msg)
    elif field_path not in _ENV_FIELD_PATHS:
        errs.not_supported(f"{path}.fieldPath", field_path, _ENV_FIELD_PATHS)


def _validate_mounts(
    errs: FieldErrors, mounts: list[Any], path: str, *, volumes: dict[str, str]
) -> None:
    mount_paths: set[str] = set()
    for i, mount in enumerate(mounts):
        p = f"{path}[{i}]"
        if not isinstance(mount, dict):
            errs.decode(p, mount, "core.VolumeMount")
            continue
        name = get_str(errs, mount, "name", path=p)
        if not name:
            errs.required(f"{p}.name")
        if name not in volumes:
            errs.not_found(f"{p}.name", name)
        mount_path = get_str(errs, mount, "mountPath", path=p)
        if not mount_path:
            errs.required(f"{p}.mountPath")
        if mount_path in mount_paths:
            errs.invalid(f"{p}.mountPath", mount_path, "must be unique")
        mount_paths.add(mount_path)


def _quantities(errs: FieldErrors, values: Any, path: str) -> dict[str, int]:
    if not values:
        return {}
    if not isinstance(values, dict):
        errs.decode(path, values, "core.ResourceList")
        return {}
    parsed = {}
    for name, raw in values.items():
        quantity = parse_quantity(raw)
        if quantity is None:
            # kube fails the request while decoding, before validation
            if errs.decode_error is None:
                errs.decode_error = _QUANTITY_MESSAGE
            continue
        if quantity < 0:
            errs.invalid(f"{path}[{name}]", str(raw), IS_NEGATIVE)
        parsed[name] = quantity
    return parsed


def _validate_resources(errs: FieldErrors, resources: Any, path: str) -> None:
    if not isinstance(resources, dict):
        errs.decode(path, resources, "core.ResourceRequirements")
        return
    limits = _quantities(errs, resources.get("limits"), f"{path}.limits")
    requests = _quantities(errs, resources.get("requests"), f"{path}.requests")
    for name, quantity in requests.items():
        limit = limits.get(name)
        if limit is None or quantity == limit:
            continue
        if quantity < limit and not name.startswith("hugepages-"):
            continue
        request_text, limit_text = str(resources["requests"][name]), str(resources["limits"][name])
        if name.startswith("hugepages-"):
            errs.invalid(f"{path}.requests", request_text,
                         f"must be equal to {name} limit of {limit_text}")
        else:
            errs.invalid(f"{path}.requests", request_text,
                         f"must be less than or equal to {name} limit of {limit_text}")


def validate_tolerations(errs: FieldErrors, tolerations: list[Any], path: str) -> None:
    for i, toleration in enumerate(tolerations):
        p = f"{path}[{i}]"
        if not isinstance(toleration, dict):
            errs.decode(p, toleration, "core.Toleration")
            continue
        key = get_str(errs, toleration, "key", path=p)
        operator = get_str(errs, toleration, "operator", path=p)
        value = get_str(errs, toleration, "value", path=p)
        effect = get_str(errs, toleration, "effect", path=p)
        if key:
            for msg in qualified_name(key):
                errs.invalid(f"{p}.key", key, msg)
        if not key and operator != "Exists":
            errs.invalid(f"{p}.operator", operator, "operator must be Exists when `key` is "
                                                    "empty, which means \"match all values "
                                                    "and all keys\"")
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(f"{p}.effect", effect,
                         "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if operator in ("Equal", ""):
            problems = label_value(value)
            if problems:
                errs.invalid(f"{p}.operator", value, ";".join(problems))
        elif operator == "Exists":
            if value:
                errs.invalid(f"{p}.operator", value,
                             "value must be empty when `operator` is 'Exists'")
        else:
            errs.not_supported(f"{p}.operator", operator, ("Equal", "Exists"))
        if effect and effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{p}.effect", effect, _TAINT_EFFECTS)


_UPDATABLE_POD_FIELDS = ",".join((
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
    "negative)",
))


def validate_ephemeral_containers_update(errs: FieldErrors, old: Obj, new: Obj) -> None:
    """ValidatePodEphemeralContainersUpdate's part 2: ephemeral containers may be added,
    never changed or removed (matched by name: a patch does not keep their order)."""
    if ((old.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/config.mirror"):
        errs.forbidden("", "static pods do not support ephemeral containers")
        return
    new_by_name = {c.get("name"): c for c in sub(new, "spec").get("ephemeralContainers") or ()
                   if isinstance(c, dict)}
    for container in sub(old, "spec").get("ephemeralContainers") or ():
        if not isinstance(container, dict):
            continue
        name = container.get("name")
        if name not in new_by_name:
            errs.forbidden("spec.ephemeralContainers",
                           f'existing ephemeral containers "{name}" may not be removed\n')
        elif new_by_name[name] != container:
            errs.forbidden(f"spec.ephemeralContainers[{name}]",
                           f'existing ephemeral containers "{name}" may not be changed\n')


def validate_pod_update(errs: FieldErrors, old: Obj, new: Obj) -> None:
    """ValidatePodUpdate's spec part: only images, deadlines and new tolerations may change."""
    old_spec, new_spec = sub(old, "spec"), sub(new, "spec")
    for key in ("containers", "initContainers"):
        old_list, new_list = old_spec.get(key) or [], new_spec.get(key) or []
        if len(old_list) != len(new_list):
            errs.forbidden(f"spec.{key}", "pod updates may not add or remove containers")
            return
    old_deadline = old_spec.get("activeDeadlineSeconds")
    new_deadline = new_spec.get("activeDeadlineSeconds")
    if isinstance(new_deadline, int):
        if not 0 <= new_deadline <= MAX_INT32:
            errs.invalid("spec.activeDeadlineSeconds", new_deadline,
                         inclusive_range_error(0, MAX_INT32))
            return
        if isinstance(old_deadline, int) and old_deadline < new_deadline:
            errs.invalid("spec.activeDeadlineSeconds", new_deadline,
                         "must be less than or equal to previous value")
            return
    elif new_deadline is None and old_deadline is not None:
        errs.invalid("spec.activeDeadlineSeconds", None,
                     "must not update from a positive integer to nil value")
    old_tolerations = old_spec.get("tolerations") or []
    new_tolerations = new_spec.get("tolerations") or []
    for toleration in old_tolerations:
        wanted = {k: v for k, v in toleration.items() if k != "tolerationSeconds"}
        if not any({k: v for k, v in t.items() if k != "tolerationSeconds"} == wanted
                   for t in new_tolerations if isinstance(t, dict)):
            errs.forbidden("spec.tolerations",
                           "existing toleration can not be modified except its "
                           "tolerationSeconds")
            break
    old_gates = {g.get("name") for g in old_spec.get("schedulingGates") or ()
                 if isinstance(g, dict)}
    for i, gate in enumerate(new_spec.get("schedulingGates") or ()):
        if isinstance(gate, dict) and gate.get("name") not in old_gates:
            errs.forbidden(f"spec.schedulingGates[{i}].name",
                           f"only deletion is allowed, but found new scheduling gate "
                           f"'{gate.get('name')}'")
    if new_spec == old_spec:
        return
    munged = copy.deepcopy(new_spec)
    for key in ("containers", "initContainers"):
        for container, before in zip(munged.get(key) or [], old_spec.get(key) or [],
                                     strict=False):
            if isinstance(container, dict) and isinstance(before, dict):
                if "image" in before:
                    container["image"] = before["image"]
                else:
                    container.pop("image", None)
    for key in ("activeDeadlineSeconds", "schedulingGates", "tolerations"):
        if key in old_spec:
            munged[key] = old_spec[key]
        else:
            munged.pop(key, None)
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if isinstance(old_grace, int) and old_grace < 0 and munged.get(
            "terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if munged != old_spec:
        errs.forbidden("spec", f"pod updates may not change fields other than "
                               f"{_UPDATABLE_POD_FIELDS}\n{_spec_diff(old_spec, munged)}")


def _spec_diff(old: Obj, new: Obj) -> str:
    """A go-cmp style summary of what differs (kube prints cmp.Diff of the internal types)."""
    lines = ["  core.PodSpec{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        go_name = key[:1].upper() + key[1:]
        if key in old:
            lines.append(f"- \t{go_name}: {go_json(old[key])},")
        if key in new:
            lines.append(f"+ \t{go_name}: {go_json(new[key])},")
    lines.append("  }")
    return "\n".join(lines) + "\n"
