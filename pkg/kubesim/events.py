"""Events: one kind of object that kube-apiserver serves through two APIs over one storage.

Core `v1` Events and `events.k8s.io/v1` Events are the same etcd objects
(kube-apiserver's storage factory makes the two resources "cohabit"): an
Event written through one API is read, listed and watched through the
other, with one resourceVersion sequence. The stored form is core/v1. A
request to events.k8s.io/v1 is converted on the way in and out, field by
field, as k8s.io/kubernetes/pkg/apis/events/v1 converts it: `regarding` is
`involvedObject`, `note` is `message`, `reportingController` is
`reportingComponent`, the `deprecated*` fields are the legacy ones.

Both forms are written as Go's structs serialise them, because that is what
clients read back: timestamps in UTC (metav1.Time to the second, MicroTime
with exactly six fractional digits, the zero time as null), omitempty fields
left out when empty, and the fields without omitempty always present
(`eventTime: null`, `reportingComponent: ""`, `source: {}` on core/v1).

Validation is pkg/apis/core/validation/events.go: every Event passes the
legacy rules; one created through events.k8s.io/v1 also passes the strict
ones (eventTime, reportingController, reportingInstance and action
required, type Normal or Warning, no deprecated fields), and an update
through it may change nothing but the series. Errors name the core/v1
fields whichever API was used, as kube's do (they validate the internal
type).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from kubesim.fielderrors import (
    FieldErrors,
    dns1123_subdomain,
    go_quote,
    qualified_name,
)

Obj = dict[str, Any]

CORE_API_VERSION: Final = "v1"
EVENTS_API_VERSION: Final = "events.k8s.io/v1"
# the storage_key of both Event resources
STORAGE: Final = "events"

REPORTING_INSTANCE_LENGTH_LIMIT: Final = 128
ACTION_LENGTH_LIMIT: Final = 128
REASON_LENGTH_LIMIT: Final = 128
NOTE_LENGTH_LIMIT: Final = 1024
EVENT_TYPES: Final = ("Normal", "Warning")

TIME_LAYOUT: Final = "2006-01-02T15:04:05Z07:00"  # metav1.Time parses time.RFC3339
MICRO_TIME_LAYOUT: Final = "2006-01-02T15:04:05.000000Z07:00"  # metav1.RFC3339Micro

_OBJECT_REFERENCE: Final = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                            "fieldPath")
_EVENT_SOURCE: Final = ("component", "host")
_GO_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)


# --- timestamps: Go's time.Parse for the two layouts metav1 uses --------------------------

class TimeError(ValueError):
    """A timestamp Go's time.Parse refuses, with Go's message."""


# The layouts as Go's parser walks them: a literal to skip, then an element to parse.
_TIME_CHUNKS: Final = (("", "2006"), ("-", "01"), ("-", "02"), ("T", "15"), (":", "04"),
                       (":", "05"), ("", "Z07:00"))
_MICRO_TIME_CHUNKS: Final = (*_TIME_CHUNKS[:-1], ("", ".000000"), ("", "Z07:00"))


def _go_number(value: str, fixed: bool) -> tuple[int, str] | None:
    """time.getnum: one or two digits (exactly two when fixed)."""
    if not value[:1].isdigit() or not value[:1].isascii():
        return None
    if not (len(value) > 1 and value[1].isdigit() and value[1].isascii()):
        return None if fixed else (int(value[0]), value[1:])
    return int(value[:2]), value[2:]


def parse_time(text: str, *, micro: bool) -> datetime:
    """A metav1.Time (micro=False) or metav1.MicroTime as Go parses it, in UTC; TimeError
    carries Go's message (`parsing time "x" as "2006-...": cannot parse "x" as "2006"`)."""
    layout = MICRO_TIME_LAYOUT if micro else TIME_LAYOUT
    value = text
    parts = {"year": 0, "month": 0, "day": 0, "hour": 0, "minute": 0, "second": 0}
    nanos = 0
    offset = 0

    def cannot(value_elem: str, layout_elem: str) -> TimeError:
        return TimeError(f"parsing time {go_quote(text)} as {go_quote(layout)}: cannot parse "
                         f"{go_quote(value_elem)} as {go_quote(layout_elem)}")

    def out_of_range(what: str) -> TimeError:
        return TimeError(f"parsing time {go_quote(text)}: {what} out of range")

    for literal, element in (_MICRO_TIME_CHUNKS if micro else _TIME_CHUNKS):
        for char in literal:
            if not value or value[0] != char:
                raise cannot(value, literal)
            value = value[1:]
        hold = value
        if element == "2006":
            if len(value) < 4 or not value[:4].isdigit() or not value[:4].isascii():
                raise cannot(hold, element)
            parts["year"], value = int(value[:4]), value[4:]
        elif element in ("01", "02", "15", "04", "05"):
            number = _go_number(value, fixed=element != "15")
            if number is None:
                raise cannot(hold, element)
            field, limit = {"01": ("month", 13), "02": ("day", 100), "15": ("hour", 24),
                            "04": ("minute", 60), "05": ("second", 60)}[element]
            parts[field], value = number
            if (element == "01" and parts[field] == 0) or parts[field] >= limit:
                raise out_of_range(field)
            if element == "05" and not micro and len(value) >= 2 and value[0] in ".," \
                    and value[1].isdigit():
                # RFC3339 takes any fractional second after the seconds
                digits = re.match(r"[0-9]*", value[1:])
                assert digits is not None
                fraction = digits.group()
                nanos, value = int(fraction[:9].ljust(9, "0")), value[1 + len(fraction):]
        elif element == ".000000":
            # RFC3339Micro wants exactly six digits
            if len(value) < 7 or value[0] not in ".," or not value[1:7].isdigit() \
                    or not value[1:7].isascii():
                raise cannot(hold, element)
            nanos, value = int(value[1:7]) * 1000, value[7:]
        else:  # Z07:00
            if value[:1] == "Z":
                value = value[1:]
                continue
            if len(value) < 6 or value[3] != ":" or value[0] not in "+-":
                raise cannot(hold, element)
            hours, minutes = _go_number(value[1:3], True), _go_number(value[4:6], True)
            if hours is None or minutes is None:
                raise cannot(hold, element)
            if hours[0] > 24:
                raise out_of_range("time zone offset hour")
            if minutes[0] > 60:
                raise out_of_range("time zone offset minute")
            offset = (hours[0] * 60 + minutes[0]) * 60 * (-1 if value[0] == "-" else 1)
            value = value[6:]
    if value:
        raise TimeError(f"parsing time {go_quote(text)}: extra text: {go_quote(value)}")
    try:
        local = datetime(parts["year"], parts["month"], parts["day"], parts["hour"],
                         parts["minute"], parts["second"], nanos // 1000,
                         tzinfo=timezone(timedelta(seconds=offset)))
    except ValueError:
        raise out_of_range("day") from None
    return local.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """metav1.Time as JSON: RFC3339 in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """metav1.MicroTime as JSON: RFC3339 in UTC with six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timestamp(value: Any, *, micro: bool) -> Any:
    """A timestamp as kube writes it back: UTC, canonical precision, null for the zero time.
    What does not parse is kept for validation to report as kube's decoder would."""
    if not isinstance(value, str):
        return value
    try:
        moment = parse_time(value, micro=micro)
    except TimeError:
        return value
    if moment == _GO_ZERO_TIME:
        return None
    return format_micro_time(moment) if micro else format_time(moment)


# --- the two serialised forms --------------------------------------------------------------

def _empty(value: Any) -> bool:
    """Go's omitempty for the scalar fields of an Event: "", 0 and absent."""
    return value is None or (type(value) is str and value == "") or (
        type(value) in (int, float) and value == 0)


def _count(value: Any) -> Any:
    return int(value) if type(value) is float and value.is_integer() else value


def _struct(value: Any, fields: tuple[str, ...]) -> Any:
    """An ObjectReference or EventSource: its known fields, the empty ones left out."""
    if not isinstance(value, dict):
        return value
    return {k: value[k] for k in fields if not _empty(value.get(k))}


def _series(value: Any, *, omit_empty: bool) -> Any:
    if not isinstance(value, dict):
        return value
    out: Obj = {}
    count = _count(value.get("count"))
    if not (omit_empty and _empty(count)):
        out["count"] = 0 if count is None else count
    out["lastObservedTime"] = _timestamp(value.get("lastObservedTime"), micro=True)
    return out


def _put(out: Obj, key: str, value: Any) -> None:
    if not _empty(value):
        out[key] = value


def to_internal(obj: Obj) -> Obj:
    """The stored (core/v1) form of an Event in either API's form."""
    if obj.get("apiVersion") == EVENTS_API_VERSION:
        core = {
            "involvedObject": obj.get("regarding"), "reason": obj.get("reason"),
            "message": obj.get("note"), "source": obj.get("deprecatedSource"),
            "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
            "lastTimestamp": obj.get("deprecatedLastTimestamp"),
            "count": obj.get("deprecatedCount"), "type": obj.get("type"),
            "eventTime": obj.get("eventTime"), "series": obj.get("series"),
            "action": obj.get("action"), "related": obj.get("related"),
            "reportingComponent": obj.get("reportingController"),
            "reportingInstance": obj.get("reportingInstance"),
        }
    else:
        core = obj
    out: Obj = {"kind": "Event", "apiVersion": CORE_API_VERSION}
    if "metadata" in obj:
        out["metadata"] = obj["metadata"]
    # core/v1 field order and tags: involvedObject has no omitempty, source and the
    # timestamps are structs (omitempty does not apply), reportingComponent and
    # reportingInstance have no omitempty either
    out["involvedObject"] = _struct(core.get("involvedObject") or {}, _OBJECT_REFERENCE)
    _put(out, "reason", core.get("reason"))
    _put(out, "message", core.get("message"))
    out["source"] = _struct(core.get("source") or {}, _EVENT_SOURCE)
    out["firstTimestamp"] = _timestamp(core.get("firstTimestamp"), micro=False)
    out["lastTimestamp"] = _timestamp(core.get("lastTimestamp"), micro=False)
    _put(out, "count", _count(core.get("count")))
    _put(out, "type", core.get("type"))
    out["eventTime"] = _timestamp(core.get("eventTime"), micro=True)
    if core.get("series") is not None:
        out["series"] = _series(core["series"], omit_empty=True)
    _put(out, "action", core.get("action"))
    if core.get("related") is not None:
        out["related"] = _struct(core["related"], _OBJECT_REFERENCE)
    reporting = core.get("reportingComponent")
    out["reportingComponent"] = "" if reporting is None else reporting
    instance = core.get("reportingInstance")
    out["reportingInstance"] = "" if instance is None else instance
    return out


def to_events_v1(obj: Obj) -> Obj:
    """The events.k8s.io/v1 form of a stored (core/v1) Event."""
    out: Obj = {"kind": "Event", "apiVersion": EVENTS_API_VERSION}
    if "metadata" in obj:
        out["metadata"] = obj["metadata"]
    # events.k8s.io/v1 field order and tags: eventTime has no omitempty, regarding and
    # deprecatedSource are structs, the deprecated timestamps are always written
    out["eventTime"] = obj.get("eventTime")
    if obj.get("series") is not None:
        out["series"] = _series(obj["series"], omit_empty=False)
    _put(out, "reportingController", obj.get("reportingComponent"))
    _put(out, "reportingInstance", obj.get("reportingInstance"))
    _put(out, "action", obj.get("action"))
    _put(out, "reason", obj.get("reason"))
    out["regarding"] = obj.get("involvedObject") or {}
    if obj.get("related") is not None:
        out["related"] = obj["related"]
    _put(out, "note", obj.get("message"))
    _put(out, "type", obj.get("type"))
    out["deprecatedSource"] = obj.get("source") or {}
    out["deprecatedFirstTimestamp"] = obj.get("firstTimestamp")
    out["deprecatedLastTimestamp"] = obj.get("lastTimestamp")
    _put(out, "deprecatedCount", obj.get("count"))
    return out


def from_storage(api_version: str, obj: Obj) -> Obj:
    """A stored Event as the API of `api_version` serves it."""
    return to_events_v1(obj) if api_version == EVENTS_API_VERSION else obj


# --- validation (pkg/apis/core/validation/events.go) ---------------------------------------

def path_segment_name(name: str) -> tuple[str, ...]:
    """path.IsValidPathSegmentName: the only rule the generic registry applies to the name of
    an Event created through core/v1 (its strategy does not validate object metadata)."""
    if name in (".", ".."):
        return (f"may not be '{name}'",)
    return tuple(f"may not contain '{c}'" for c in ("/", "%") if c in name)


def _byte_length(text: str) -> int:
    return len(text.encode())  # Go's len() of a string


class _Fields:
    """An Event's fields with Go's zero values for what is absent; wrong JSON types are
    recorded as the decode errors kube fails such a request with (400)."""

    def __init__(self, errs: FieldErrors, event: Obj) -> None:
        self.errs = errs
        self.event = event

    def string(self, key: str, parent: Obj | None = None, path: str = "") -> str:
        value = (self.event if parent is None else parent).get(key)
        if value is None:
            return ""
        if type(value) is not str:
            self.errs.decode(f"{path}{key}", value, "string")
            return ""
        return value

    def struct(self, key: str, go_type: str) -> Obj | None:
        value = self.event.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.errs.decode(key, value, go_type)
        return None

    def count(self, key: str, parent: Obj | None = None, path: str = "") -> int:
        value = (self.event if parent is None else parent).get(key)
        if value is None:
            return 0
        if type(value) is int:
            return value
        self.errs.decode(f"{path}{key}", value, "int32")
        return 0

    def time(self, key: str, *, micro: bool, parent: Obj | None = None) -> str | None:
        """The timestamp, None for the zero time."""
        value = (self.event if parent is None else parent).get(key)
        if value is None:
            return None
        if type(value) is not str:
            self.errs.decode(key, value, "string")
            return None
        try:
            parse_time(value, micro=micro)
        except TimeError as exc:
            if self.errs.decode_error is None:
                self.errs.decode_error = str(exc)
            return None
        return value


def _reference(fields: _Fields, key: str) -> Obj:
    ref = fields.struct(key, "v1.ObjectReference") or {}
    for name in _OBJECT_REFERENCE:
        fields.string(name, ref, f"{key}.")
    return ref


def _legacy(errs: FieldErrors, event: Obj, fields: _Fields) -> None:
    """legacyValidateEvent: what every Event, old or new, through either API, must pass."""
    meta = event.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    namespace = namespace if isinstance(namespace, str) else ""
    involved = _reference(fields, "involvedObject")
    involved_namespace = fields.string("namespace", involved, "involvedObject.")
    if fields.time("eventTime", micro=True) is None:
        # an old-style Event: its namespace and its object's agree ("" or "default" for
        # objects without a namespace, for old clients)
        if (involved_namespace and namespace != involved_namespace) or (
            not involved_namespace and namespace not in ("", "default")
        ):
            errs.invalid("involvedObject.namespace", involved_namespace,
                         "does not match event.namespace")
    else:
        if not involved_namespace and namespace not in ("default", "kube-system"):
            errs.invalid("involvedObject.namespace", involved_namespace,
                         "does not match event.namespace")
        # reportingController is reported under its core/v1 name (kubernetes#111506)
        reporting = fields.string("reportingComponent")
        if not reporting:
            errs.required("reportingComponent")
        for msg in qualified_name(reporting):
            errs.invalid("reportingComponent", reporting, msg)
        instance = fields.string("reportingInstance")
        if not instance:
            errs.required("reportingInstance")
        if _byte_length(instance) > REPORTING_INSTANCE_LENGTH_LIMIT:
            errs.invalid("reportingInstance", "",
                         f"can have at most {REPORTING_INSTANCE_LENGTH_LIMIT} characters")
        for key, limit in (("action", ACTION_LENGTH_LIMIT), ("reason", REASON_LENGTH_LIMIT)):
            value = fields.string(key)
            if not value:
                errs.required(key)
            if _byte_length(value) > limit:
                errs.invalid(key, "", f"can have at most {limit} characters")
        if _byte_length(fields.string("message")) > NOTE_LENGTH_LIMIT:
            errs.invalid("message", "", f"can have at most {NOTE_LENGTH_LIMIT} characters")
    for msg in dns1123_subdomain(namespace):
        errs.invalid("namespace", namespace, msg)


def _validate_series(errs: FieldErrors, fields: _Fields) -> None:
    series = fields.struct("series", "v1.EventSeries")
    if series is None:
        return
    if fields.count("count", series, "series.") < 2:
        errs.invalid("series.count", "", "should be at least 2")
    if fields.time("lastObservedTime", micro=True, parent=series) is None:
        errs.required("series.lastObservedTime")


def _check_types(fields: _Fields) -> None:
    """The decode errors of the fields no rule below reads."""
    for key in ("reason", "message", "type", "action", "reportingComponent",
                "reportingInstance"):
        fields.string(key)
    fields.count("count")
    source = fields.struct("source", "v1.EventSource") or {}
    for key in _EVENT_SOURCE:
        fields.string(key, source, "source.")
    if fields.event.get("related") is not None:
        _reference(fields, "related")
    fields.time("firstTimestamp", micro=False)
    fields.time("lastTimestamp", micro=False)


def validate_create(
    errs: FieldErrors, event: Obj, *, strict: bool, validate_meta: Callable[[], None]
) -> None:
    """ValidateEventCreate on a stored-form Event; strict for events.k8s.io/v1 requests.

    `validate_meta` is ValidateObjectMeta with DNS subdomain names, which the strict rules
    include (the legacy ones leave metadata to the generic registry)."""
    fields = _Fields(errs, event)
    _check_types(fields)
    _legacy(errs, event, fields)
    if not strict:
        return
    validate_meta()
    _validate_series(errs, fields)
    if fields.time("eventTime", micro=True) is None:
        errs.required("eventTime")
    event_type = fields.string("type")
    if event_type not in EVENT_TYPES:
        errs.invalid("type", "", f"has invalid value: {event_type}")
    for key in ("firstTimestamp", "lastTimestamp"):
        if fields.time(key, micro=False) is not None:
            errs.invalid(key, "", "needs to be unset")
    if fields.count("count") != 0:
        errs.invalid("count", "", "needs to be unset")
    source = fields.struct("source", "v1.EventSource") or {}
    if fields.string("component", source) or fields.string("host", source):
        errs.invalid("source", "", "needs to be unset")


# the fields an update through events.k8s.io/v1 may not change, with their zero values
_IMMUTABLE: Final[tuple[tuple[str, Any], ...]] = (
    ("involvedObject", {}), ("reason", ""), ("message", ""), ("source", {}),
    ("firstTimestamp", None), ("lastTimestamp", None), ("count", 0), ("reason", ""),
    ("type", ""), ("eventTime", None), ("action", ""), ("related", None),
    ("reportingComponent", ""), ("reportingInstance", ""),
)


def validate_update(errs: FieldErrors, old: Obj, new: Obj, *, strict: bool) -> None:
    """ValidateEventUpdate on stored-form Events; strict for events.k8s.io/v1 requests (the
    object metadata rules of an update apply to every kind and are checked elsewhere)."""
    fields = _Fields(errs, new)
    _check_types(fields)
    _legacy(errs, new, fields)
    if not strict:
        return
    if new.get("series") != old.get("series"):
        _validate_series(errs, fields)
    for key, zero in _IMMUTABLE:
        # kube checks reason twice, and so reports a changed reason twice
        value = new.get(key, zero)
        if value != old.get(key, zero):
            errs.immutable(key, value)
