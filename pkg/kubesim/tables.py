"""Server-side printing: objects as meta.k8s.io/v1 Tables.

`kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and
prints whatever columns the server returns. kube-apiserver's printers give
every built-in kind its familiar columns, and a CRD its
additionalPrinterColumns (evaluated as JSONPath). Each row carries the
object's metadata (PartialObjectMetadata), which kubectl needs for `-A`.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Callable
from typing import Any

from kubesim import events
from kubesim.resources import Resource

Obj = dict[str, Any]
Column = tuple[str, str, str, int]  # name, type, description, priority
Row = list[Any]

_NAME: Column = ("Name", "string", "Name must be unique within a namespace.", 0)
_AGE: Column = ("Age", "string", "CreationTimestamp is a timestamp representing the server "
                "time when this object was created.", 0)


def human_duration(seconds: float) -> str:
    """kube's duration.HumanDuration, the way AGE columns read."""
    s = int(seconds)
    s = max(s, 0)
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        rest = days % 365
        return f"{days // 365}y{rest}d" if rest else f"{days // 365}y"
    return f"{hours // 24 // 365}y"


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<invalid>"
    return human_duration(time.time() - then)


def _micro_age(timestamp: str | None) -> str:
    """translateMicroTimestampSince: the age of a MicroTime (six fractional digits)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = events.parse_time(timestamp, micro=True).timestamp()
    except events.TimeError:
        return "<invalid>"
    return human_duration(time.time() - then)


def _event_row(obj: Obj) -> Row:
    """printEvent, on the core/v1 form whichever API the Event was listed through."""
    if obj.get("apiVersion") == events.EVENTS_API_VERSION:
        obj = events.to_internal(obj)
    # First Seen: firstTimestamp, or eventTime for events of the new API; Last Seen:
    # lastTimestamp, else First Seen, but a series' last observation when there is one
    first = _age(obj["firstTimestamp"]) if obj.get("firstTimestamp") else _micro_age(
        obj.get("eventTime"))
    last = _age(obj["lastTimestamp"]) if obj.get("lastTimestamp") else first
    count = obj.get("count") or 0
    series = obj.get("series")
    if isinstance(series, dict):
        last = _micro_age(series.get("lastObservedTime"))
        count = series.get("count") or 0
    elif count == 0:
        count = 1  # singleton events of the new API have no count
    involved = obj.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = obj.get("source") or {}
    # formatEventSource: component (else reportingController), then host (else
    # reportingInstance) after a comma when there is one
    component = source.get("component") or obj.get("reportingComponent") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [last, obj.get("type", ""), obj.get("reason", ""), target,
            involved.get("fieldPath", ""), f"{component}, {instance}" if instance else component,
            str(obj.get("message") or "").strip(), first, count, obj["metadata"]["name"]]


def _pod_row(pod: Obj) -> Row:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for init in status.get("initContainerStatuses") or []:
        state = init.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason") not in (None, "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
            break
    for cs in statuses:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason") and reason not in ("Succeeded", "Failed"):
            reason = state["terminated"]["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return [pod["metadata"]["name"], f"{ready}/{total}", reason, restarts,
            _age(pod["metadata"].get("creationTimestamp")), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", "<none>", "<none>"]


def _containers(obj: Obj) -> tuple[str, str]:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers") or []
    return (",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers))


def _selector(obj: Obj) -> str:
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _deployment_row(obj: Obj) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [obj["metadata"]["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
            _age(obj["metadata"].get("creationTimestamp")), names, images, _selector(obj)]


def _replicaset_row(obj: Obj) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [obj["metadata"]["name"], spec.get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0), _age(obj["metadata"].get("creationTimestamp")),
            names, images, _selector(obj)]


def _daemonset_row(obj: Obj) -> Row:
    status = obj.get("status") or {}
    selector = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "nodeSelector") or {}
    return [obj["metadata"]["name"], status.get("desiredNumberScheduled", 0),
            status.get("currentNumberScheduled", 0), status.get("numberReady", 0),
            status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
            _age(obj["metadata"].get("creationTimestamp"))]


def _statefulset_row(obj: Obj) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [obj["metadata"]["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            _age(obj["metadata"].get("creationTimestamp"))]


def _job_row(obj: Obj) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif spec.get("suspend"):
        state = "Suspended"
    else:
        state = "Running"
    return [obj["metadata"]["name"], state,
            f"{status.get('succeeded', 0)}/{spec.get('completions', 1)}",
            _duration(status), _age(obj["metadata"].get("creationTimestamp"))]


def _duration(status: Obj) -> str:
    start, end = status.get("startTime"), status.get("completionTime")
    if not start:
        return ""
    try:
        t0 = calendar.timegm(time.strptime(start, "%Y-%m-%dT%H:%M:%SZ"))
        t1 = calendar.timegm(time.strptime(end, "%Y-%m-%dT%H:%M:%SZ")) if end else time.time()
    except ValueError:
        return ""
    return human_duration(t1 - t0)


def _cronjob_row(obj: Obj) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    last = status.get("lastScheduleTime")
    return [obj["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            bool(spec.get("suspend")), len(status.get("active") or []),
            _age(last) if last else "<none>", _age(obj["metadata"].get("creationTimestamp"))]


def _node_row(obj: Obj) -> Row:
    conditions = {c.get("type"): c.get("status")
                  for c in (obj.get("status") or {}).get("conditions") or []}
    state = "Ready" if conditions.get("Ready") == "True" else "NotReady"
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in obj["metadata"].get("labels") or {}
                   if k.startswith("node-role.kubernetes.io/"))
    version = ((obj.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [obj["metadata"]["name"], state, ",".join(roles) or "<none>",
            _age(obj["metadata"].get("creationTimestamp")), version]


def _simple(*extra: Callable[[Obj], Any]) -> Callable[[Obj], Row]:
    def row(obj: Obj) -> Row:
        return [obj["metadata"]["name"], *(f(obj) for f in extra),
                _age(obj["metadata"].get("creationTimestamp"))]
    return row


def _col(name: str, kind: str = "string", priority: int = 0) -> Column:
    return (name, kind, "", priority)


_BUILTIN: dict[str, tuple[list[Column], Callable[[Obj], Row]]] = {
    "Pod": ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), _AGE,
             _col("IP", priority=1), _col("Node", priority=1),
             _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
            _pod_row),
    "Deployment": ([_NAME, _col("Ready"), _col("Up-to-date", "integer"),
                    _col("Available", "integer"), _AGE, _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)],
                   _deployment_row),
    "ReplicaSet": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"),
                    _col("Ready", "integer"), _AGE, _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)],
                   _replicaset_row),
    "DaemonSet": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"),
                   _col("Ready", "integer"), _col("Up-to-date", "integer"),
                   _col("Available", "integer"), _col("Node Selector"), _AGE],
                  _daemonset_row),
    "StatefulSet": ([_NAME, _col("Ready"), _AGE], _statefulset_row),
    "Job": ([_NAME, _col("Status"), _col("Completions"), _col("Duration"), _AGE], _job_row),
    "CronJob": ([_NAME, _col("Schedule"), _col("Timezone"), _col("Suspend", "boolean"),
                 _col("Active", "integer"), _col("Last Schedule"), _AGE], _cronjob_row),
    "Node": ([_NAME, _col("Status"), _col("Roles"), _AGE, _col("Version")], _node_row),
    # kube-apiserver prints Events of both APIs with one printer (the internal type)
    "Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
               _col("Subobject", priority=1), _col("Source", priority=1), _col("Message"),
               _col("First Seen", priority=1), _col("Count", priority=1),
               ("Name", "string", _NAME[2], 1)],
              _event_row),
    "Namespace": ([_NAME, _col("Status"), _AGE],
                  _simple(lambda o: (o.get("status") or {}).get("phase", "Active"))),
    "Secret": ([_NAME, _col("Type"), _col("Data", "string"), _AGE],
               _simple(lambda o: o.get("type", "Opaque"), lambda o: len(o.get("data") or {}))),
    "ConfigMap": ([_NAME, _col("Data", "string"), _AGE],
                  _simple(lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))),
    "Lease": ([_NAME, _col("Holder"), _AGE],
              _simple(lambda o: (o.get("spec") or {}).get("holderIdentity") or "")),
    "CustomResourceDefinition": ([_NAME, _col("Created At", "date")],
                                 lambda o: [o["metadata"]["name"],
                                            o["metadata"].get("creationTimestamp")]),
}


# -- JSONPath for additionalPrinterColumns ------------------------------------------------------

_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The subset of kubectl JSONPath CRD printer columns use: fields, indexes, [*]."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    values = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            return []
        pos = match.end()
        name, index, quoted, dquoted = match.groups()
        key = name if name is not None else quoted if quoted is not None else dquoted
        nxt: list[Any] = []
        for value in values:
            if key is not None:
                if isinstance(value, dict) and key in value:
                    nxt.append(value[key])
            elif index == "*":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif isinstance(value, list) and index is not None and int(index) < len(value):
                nxt.append(value[int(index)])
        values = nxt
    return values


def _cell(values: list[Any], column_type: str) -> Any:
    if not values:
        return None
    if len(values) > 1:
        return ",".join(_to_text(v) for v in values)
    value = values[0]
    if column_type == "date" and isinstance(value, str):
        return _age(value)
    if column_type == "integer" and isinstance(value, (int, float)) and not isinstance(
        value, bool
    ):
        return int(value)
    if column_type in ("string",) and not isinstance(value, str):
        return _to_text(value)
    return value


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _definitions(columns: list[Column]) -> list[dict[str, Any]]:
    return [
        {"name": name, "type": kind, "format": "name" if name == "Name" else "",
         "description": description, "priority": priority}
        for name, kind, description, priority in columns
    ]


def _metadata(obj: Obj) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def to_table(
    resource: Resource,
    objects: list[Obj],
    *,
    list_metadata: dict[str, Any] | None = None,
    include_object: str = "Metadata",
    headers: bool = True,
) -> Obj:
    """A Table of `objects`; include_object is None, Metadata or Object as kube supports."""
    row_of: Callable[[Obj], Row]
    if resource.is_custom:
        columns: list[Column] = [_NAME]
        specs = list(resource.printer_columns)
        columns += [(c["name"], c.get("type", "string"), c.get("description", ""),
                     int(c.get("priority", 0))) for c in specs]
        if not specs:
            columns.append(_AGE)

        def custom_row(obj: Obj) -> Row:
            cells: Row = [obj["metadata"]["name"]]
            cells += [_cell(jsonpath(obj, c["jsonPath"]), c.get("type", "string"))
                      for c in specs]
            if not specs:
                cells.append(_age(obj["metadata"].get("creationTimestamp")))
            return cells

        row_of = custom_row
    elif resource.kind in _BUILTIN:
        columns, row_of = _BUILTIN[resource.kind]
    else:
        columns, row_of = [_NAME, _AGE], _simple()
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": row_of(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata or {},
        "columnDefinitions": _definitions(columns) if headers else [],
        "rows": rows,
    }
