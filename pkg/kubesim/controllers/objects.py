"""Small helpers over the JSON form of Kubernetes objects.

Every controller needs the same handful of facts about objects: their cache
key, their controller owner reference, whether a pod counts as active,
ready or available, and how to set a status condition without churning its
timestamps. They live here so each controller reads like its kube
counterpart instead of re-deriving them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

Obj = dict[str, Any]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    """metav1.Time: second precision, UTC, 'Z' suffix."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = obj.get("metadata") or {}
    return result


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid", ""))


def key_of(obj: Mapping[str, Any]) -> str:
    """The work-queue key: 'namespace/name', or 'name' for cluster-scoped objects."""
    namespace = namespace_of(obj)
    return f"{namespace}/{name_of(obj)}" if namespace else name_of(obj)


def split_key(key: str) -> tuple[str | None, str]:
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, key)


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    result: dict[str, str] = meta(obj).get("labels") or {}
    return result


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    result: dict[str, str] = meta(obj).get("annotations") or {}
    return result


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def generation_of(obj: Mapping[str, Any]) -> int:
    return int(meta(obj).get("generation") or 1)


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The owner reference with controller=true, if any (at most one is allowed)."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            result: dict[str, Any] = ref
            return result
    return None


def owner_reference(owner: Mapping[str, Any], *, api_version: str, kind: str) -> dict[str, Any]:
    """The controller reference a workload puts on what it creates.

    blockOwnerDeletion=true makes a foreground deletion of the owner wait for
    the dependent, as kube's controllers do (metav1.NewControllerRef).
    """
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


_encoder = msgspec.json.Encoder()


def deep_copy(obj: Mapping[str, Any]) -> Obj:
    """A deep copy of a JSON object (a msgspec round trip beats copy.deepcopy)."""
    copied: Obj = msgspec.json.decode(_encoder.encode(obj))
    return copied


# --- pods ---------------------------------------------------------------------------------


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_pod_active(pod: Mapping[str, Any]) -> bool:
    """kube's controller.IsPodActive: not terminal and not being deleted."""
    return pod_phase(pod) not in TERMINAL_PHASES and not is_terminating(pod)


def get_condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            result: dict[str, Any] = condition
            return result
    return None


def condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    condition = get_condition(obj, kind)
    return condition is not None and condition.get("status") == "True"


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    return condition_true(pod, "Ready")


def ready_since(pod: Mapping[str, Any]) -> dt.datetime | None:
    condition = get_condition(pod, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def available_in(
    pod: Mapping[str, Any], min_ready_seconds: int, *, at: dt.datetime
) -> float | None:
    """Seconds until a ready pod becomes available (0: it is), None if it is not ready.

    A pod is available once it has been Ready for minReadySeconds
    (podutil.IsPodAvailable).
    """
    if not is_pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return 0.0
    remaining = (since + dt.timedelta(seconds=min_ready_seconds) - at).total_seconds()
    return max(remaining, 0.0)


def node_name_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def set_condition(
    conditions: list[dict[str, Any]],
    *,
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
    at: str,
    update_time: bool = False,
    probe_time: bool = False,
) -> list[dict[str, Any]]:
    """Set a condition by type, keeping lastTransitionTime unless the status flips.

    Returns a new list; the others keep their order. update_time adds
    lastUpdateTime (Deployments) which moves whenever reason or message do.
    probe_time adds lastProbeTime: null as pod conditions carry it.
    """
    out = [dict(c) for c in conditions]
    existing = next((c for c in out if c.get("type") == kind), None)
    fresh: dict[str, Any] = {"type": kind, "status": status}
    if probe_time:
        fresh["lastProbeTime"] = None
    if update_time:
        fresh["lastUpdateTime"] = at
    fresh["lastTransitionTime"] = at
    if reason is not None:
        fresh["reason"] = reason
    if message is not None:
        fresh["message"] = message
    if existing is None:
        out.append(fresh)
        return out
    if existing.get("status") == status:
        fresh["lastTransitionTime"] = existing.get("lastTransitionTime", at)
        if update_time and existing.get("reason") == reason and existing.get("message") == message:
            fresh["lastUpdateTime"] = existing.get("lastUpdateTime", at)
    out[out.index(existing)] = fresh
    return out


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        percent = int(text[:-1])
        scaled = percent * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(text)


def sorted_by_creation(objects: Iterable[Obj]) -> list[Obj]:
    return sorted(objects, key=lambda o: (meta(o).get("creationTimestamp") or "", name_of(o)))
