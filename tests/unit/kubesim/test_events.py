"""Events as kube-apiserver serves them: two APIs over one storage, conversion, validation,
field selectors, printing and expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubesim import events, statuses, tables
from kubesim.apiserver import STRATEGIC_PATCH, ApiServer
from kubesim.events import TimeError, parse_time, to_events_v1, to_internal
from kubesim.fielderrors import FieldErrors
from kubesim.resources import Resource
from kubesim.storage import Store, Watch

MICRO = "2024-05-01T10:00:00.123456Z"


def _core_event(name: str = "web.1", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u-1",
                           "apiVersion": "v1", "fieldPath": "spec.containers{web}"},
        "reason": "Pulling", "message": 'Pulling image "nginx"',
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:00:05Z",
        "count": 2, "type": "Normal",
    }
    event.update(fields)
    return event


def _new_event(name: str = "web.2", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": MICRO, "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-kubesim", "action": "Binding",
        "reason": "Scheduled", "regarding": {"kind": "Pod", "namespace": "default", "name": "web"},
        "note": "Successfully assigned default/web to node-1", "type": "Normal",
    }
    event.update(fields)
    return event


# --- timestamps --------------------------------------------------------------------------

def test_times_parse_as_go_parses_rfc3339_and_micro_time() -> None:
    assert parse_time("2024-05-01T12:00:00+02:00", micro=False).isoformat() == (
        "2024-05-01T10:00:00+00:00")
    # RFC3339 takes any fraction; MicroTime wants exactly six digits
    assert parse_time("2024-05-01T10:00:00.5Z", micro=False).microsecond == 500000
    assert parse_time(MICRO, micro=True).microsecond == 123456
    cases = {
        ("2024-05-01T10:00:00Z", True): 'parsing time "2024-05-01T10:00:00Z" as '
        '"2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000"',
        ("yesterday", False): 'parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": '
        'cannot parse "yesterday" as "2006"',
        ("2024-13-01T10:00:00Z", False): 'parsing time "2024-13-01T10:00:00Z": month out of '
        "range",
        ("2024-02-30T10:00:00Z", False): 'parsing time "2024-02-30T10:00:00Z": day out of range',
        ("2024-05-01 10:00:00Z", False): 'parsing time "2024-05-01 10:00:00Z" as '
        '"2006-01-02T15:04:05Z07:00": cannot parse " 10:00:00Z" as "T"',
        ("2024-05-01T10:00:00Zjunk", False): 'parsing time "2024-05-01T10:00:00Zjunk": extra '
        'text: "junk"',
    }
    for (text, micro), message in cases.items():
        with pytest.raises(TimeError) as raised:
            parse_time(text, micro=micro)
        assert str(raised.value) == message


# --- conversion --------------------------------------------------------------------------

def test_core_events_are_written_as_go_serialises_them() -> None:
    stored = to_internal(_core_event(count=0, message="", extra="dropped",
                                     firstTimestamp="2024-05-01T12:00:00.9+02:00"))
    # omitempty fields left out when empty, structs and fields without omitempty always there
    assert "count" not in stored and "message" not in stored and "extra" not in stored
    assert stored["eventTime"] is None
    assert stored["reportingComponent"] == "" and stored["reportingInstance"] == ""
    # metav1.Time: UTC, to the second
    assert stored["firstTimestamp"] == "2024-05-01T10:00:00Z"
    bare = to_internal({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"}})
    assert bare["involvedObject"] == {} and bare["source"] == {}
    assert bare["firstTimestamp"] is None and bare["lastTimestamp"] is None
    # the zero time is null, MicroTime always has six digits
    assert to_internal(_core_event(eventTime="0001-01-01T00:00:00.000000Z"))["eventTime"] is None
    assert to_internal(_core_event(eventTime="2024-05-01T12:00:00.000001+02:00"))[
        "eventTime"] == "2024-05-01T10:00:00.000001Z"


def test_events_v1_converts_field_by_field_to_core() -> None:
    related = {"kind": "Node", "name": "node-1"}
    stored = to_internal(_new_event(series={"count": 3, "lastObservedTime": MICRO},
                                    related=related, deprecatedSource={"component": "old"},
                                    deprecatedFirstTimestamp="2024-05-01T10:00:00Z",
                                    deprecatedLastTimestamp="2024-05-01T10:00:01Z",
                                    deprecatedCount=4))
    assert stored["apiVersion"] == "v1"
    assert stored["involvedObject"] == {"kind": "Pod", "namespace": "default", "name": "web"}
    assert stored["message"] == "Successfully assigned default/web to node-1"
    assert stored["reportingComponent"] == "default-scheduler"
    assert stored["reportingInstance"] == "default-scheduler-kubesim"
    assert stored["eventTime"] == MICRO and stored["action"] == "Binding"
    assert stored["series"] == {"count": 3, "lastObservedTime": MICRO}
    assert stored["related"] == related and stored["source"] == {"component": "old"}
    assert stored["firstTimestamp"] == "2024-05-01T10:00:00Z"
    assert stored["lastTimestamp"] == "2024-05-01T10:00:01Z" and stored["count"] == 4
    served = to_events_v1(stored)
    assert served["apiVersion"] == "events.k8s.io/v1"
    assert served["regarding"] == stored["involvedObject"] and served["note"] == stored["message"]
    assert served["reportingController"] == "default-scheduler"
    assert served["deprecatedCount"] == 4 and served["deprecatedSource"] == {"component": "old"}


def test_conversion_round_trips_in_both_directions() -> None:
    for event in (_core_event(), _new_event(), _core_event(series={"count": 2})):
        stored = to_internal(event)
        assert to_internal(to_events_v1(stored)) == stored
        assert to_events_v1(to_internal(to_events_v1(stored))) == to_events_v1(stored)
    legacy = to_events_v1(to_internal(_core_event()))
    # what the events.k8s.io/v1 form always carries, as Go writes it
    assert legacy["eventTime"] is None and "reportingController" not in legacy
    assert legacy["deprecatedCount"] == 2 and legacy["deprecatedSource"]["host"] == "node-1"
    new = to_events_v1(to_internal(_new_event()))
    assert new["deprecatedSource"] == {} and new["deprecatedFirstTimestamp"] is None
    assert "deprecatedCount" not in new


# --- validation --------------------------------------------------------------------------

def _errors(event: dict[str, Any], *, strict: bool, old: dict[str, Any] | None = None,
            ) -> list[tuple[str, str, str]]:
    errs = FieldErrors()
    if old is None:
        events.validate_create(errs, to_internal(event), strict=strict,
                               validate_meta=lambda: None)
    else:
        events.validate_update(errs, to_internal(old), to_internal(event), strict=strict)
    assert errs.decode_error is None
    return errs.causes


def test_legacy_rules_tie_the_namespace_to_the_involved_object() -> None:
    assert _errors(_core_event(), strict=False) == []
    other = _core_event(involvedObject={"kind": "Pod", "namespace": "other", "name": "web"})
    assert _errors(other, strict=False) == [
        ("FieldValueInvalid", "involvedObject.namespace",
         'Invalid value: "other": does not match event.namespace')]
    # an object without a namespace (a Node) is reported in "default" (or in no namespace)
    node = _core_event(involvedObject={"kind": "Node", "name": "node-1"})
    assert _errors(node, strict=False) == []
    node["metadata"]["namespace"] = "kube-system"
    assert [c[1] for c in _errors(node, strict=False)] == ["involvedObject.namespace"]


def test_a_new_style_event_needs_its_reporter_even_through_core() -> None:
    event = _core_event(eventTime=MICRO, reason="", message="x" * 1025,
                        reportingInstance="i" * 129)
    causes = _errors(event, strict=False)
    # reportingController is reported under its core/v1 name
    assert causes[0] == ("FieldValueRequired", "reportingComponent", "Required value")
    assert ("FieldValueInvalid", "reportingComponent",
            'Invalid value: "": name part must be non-empty') in causes
    assert ("FieldValueInvalid", "reportingInstance",
            'Invalid value: "": can have at most 128 characters') in causes
    assert ("FieldValueRequired", "action", "Required value") in causes
    assert ("FieldValueRequired", "reason", "Required value") in causes
    assert ("FieldValueInvalid", "message",
            'Invalid value: "": can have at most 1024 characters') in causes


def test_events_v1_requests_pass_the_strict_rules() -> None:
    assert _errors(_new_event(), strict=True) == []
    bad = _new_event(eventTime=None, type="Info", deprecatedCount=2,
                     deprecatedFirstTimestamp="2024-05-01T10:00:00Z",
                     deprecatedSource={"host": "n"}, series={"count": 1})
    assert _errors(bad, strict=True) == [
        ("FieldValueInvalid", "series.count", 'Invalid value: "": should be at least 2'),
        ("FieldValueRequired", "series.lastObservedTime", "Required value"),
        ("FieldValueRequired", "eventTime", "Required value"),
        ("FieldValueInvalid", "type", 'Invalid value: "": has invalid value: Info'),
        ("FieldValueInvalid", "firstTimestamp", 'Invalid value: "": needs to be unset'),
        ("FieldValueInvalid", "count", 'Invalid value: "": needs to be unset'),
        ("FieldValueInvalid", "source", 'Invalid value: "": needs to be unset'),
    ]
    # the same object through core/v1 is only held to the legacy rules
    assert _errors(bad, strict=False) == []


def test_an_events_v1_update_may_change_only_the_series() -> None:
    old = _new_event()
    series = _new_event(series={"count": 2, "lastObservedTime": MICRO})
    assert _errors(series, strict=True, old=old) == []
    changed = _new_event(note="another note", action="Preempting")
    assert _errors(changed, strict=True, old=old) == [
        ("FieldValueInvalid", "message", 'Invalid value: "another note": field is immutable'),
        ("FieldValueInvalid", "action", 'Invalid value: "Preempting": field is immutable'),
    ]
    # through core/v1 anything goes (the recorder rewrites count, lastTimestamp, message)
    assert _errors(changed, strict=False, old=old) == []


def test_wrong_json_types_are_decode_errors() -> None:
    errs = FieldErrors()
    events.validate_create(errs, to_internal(_core_event(count="two")), strict=False,
                           validate_meta=lambda: None)
    assert errs.decode_error is not None and ".count of type int32" in errs.decode_error
    errs = FieldErrors()
    events.validate_create(errs, to_internal(_new_event(eventTime="2024-05-01T10:00:00Z")),
                           strict=True, validate_meta=lambda: None)
    assert errs.decode_error == ('parsing time "2024-05-01T10:00:00Z" as '
                                 '"2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as '
                                 '".000000"')


# --- through the ApiServer ---------------------------------------------------------------

@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    server = ApiServer(store=Store(history=100))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _core(api: ApiServer) -> Resource:
    return api.lookup("", "v1", "events")


def _v1(api: ApiServer) -> Resource:
    return api.lookup("events.k8s.io", "v1", "events")


async def _next(watch: Watch, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    assert await watch.wait(timeout), "no watch event in time"
    event = watch.drain(1)[0]
    return event.type, event.object


async def test_both_apis_serve_one_storage(api: ApiServer) -> None:
    core_watch = api.watch(_core(api), namespace="default")
    new_watch = api.watch(_v1(api), namespace="default")
    legacy = await api.create(_core(api), _core_event(), namespace="default")
    new = await api.create(_v1(api), _new_event(), namespace="default")
    assert "generation" not in legacy["metadata"]  # the event strategy sets none
    seen = api.get(_v1(api), namespace="default", name="web.1")
    assert seen["note"] == legacy["message"]
    assert seen["metadata"]["resourceVersion"] == legacy["metadata"]["resourceVersion"]
    assert api.get(_core(api), namespace="default", name="web.2")["message"] == new["note"]
    listed = [api.list(r) for r in (_core(api), _v1(api))]
    assert listed[0]["metadata"]["resourceVersion"] == listed[1]["metadata"]["resourceVersion"]
    assert [i["apiVersion"] for i in listed[1]["items"]] == ["events.k8s.io/v1"] * 2
    for watch, api_version in ((core_watch, "v1"), (new_watch, "events.k8s.io/v1")):
        for name in ("web.1", "web.2"):
            etype, obj = await _next(watch)
            assert (etype, obj["metadata"]["name"], obj["apiVersion"]) == (
                "ADDED", name, api_version)
    deleted = await api.delete(_v1(api), namespace="default", name="web.1")
    assert deleted["apiVersion"] == "events.k8s.io/v1"
    assert (await _next(core_watch))[0] == "DELETED"
    with pytest.raises(statuses.ApiError) as missing:
        api.get(_v1(api), namespace="default", name="web.1")
    assert missing.value.message == 'events.events.k8s.io "web.1" not found'


async def test_the_recorder_and_scheduler_patches(api: ApiServer) -> None:
    await api.create(_core(api), _core_event(), namespace="default")
    patched = await api.patch(
        _core(api), namespace="default", name="web.1", patch_type=STRATEGIC_PATCH,
        patch={"count": 3, "lastTimestamp": "2024-05-01T10:01:00Z", "message": "again"})
    assert (patched["count"], patched["message"]) == (3, "again")
    await api.create(_v1(api), _new_event(), namespace="default")
    series = {"count": 2, "lastObservedTime": "2024-05-01T10:00:09.000000Z"}
    patched = await api.patch(_v1(api), namespace="default", name="web.2",
                              patch_type=STRATEGIC_PATCH, patch={"series": series})
    assert patched["series"] == series
    assert api.get(_core(api), namespace="default", name="web.2")["series"] == series
    with pytest.raises(statuses.ApiError) as immutable:
        await api.patch(_v1(api), namespace="default", name="web.2",
                        patch_type=STRATEGIC_PATCH, patch={"note": "rewritten"})
    assert immutable.value.code == 422
    assert immutable.value.message == (
        'Event "web.2" is invalid: message: Invalid value: "rewritten": field is immutable')


async def test_names_are_checked_as_each_api_checks_them(api: ApiServer) -> None:
    # core/v1 leaves names to the generic registry (path segments): uppercase is accepted
    await api.create(_core(api), _core_event("Web.1"), namespace="default")
    with pytest.raises(statuses.ApiError) as invalid:
        await api.create(_v1(api), _new_event("Web.2"), namespace="default")
    assert invalid.value.status()["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(statuses.ApiError) as slash:
        await api.create(_core(api), _core_event("a%b"), namespace="default")
    assert "may not contain '%'" in slash.value.message


async def test_field_selectors_of_each_api(api: ApiServer) -> None:
    await api.create(_core(api), _core_event(), namespace="default")
    await api.create(_v1(api), _new_event(), namespace="default")

    def names(resource: Resource, selector: str) -> list[str]:
        items = api.list(resource, field_selector=selector)["items"]
        return [i["metadata"]["name"] for i in items]

    assert names(_core(api), "involvedObject.name=web,involvedObject.kind=Pod") == [
        "web.1", "web.2"]
    assert names(_core(api), "reportingComponent=default-scheduler") == ["web.2"]
    # source: the legacy component, else the reporting controller
    assert names(_core(api), "source=default-scheduler") == ["web.2"]
    assert names(_core(api), "source=kubelet,type=Normal") == ["web.1"]
    assert names(_v1(api), "regarding.name=web,reportingController=default-scheduler") == [
        "web.2"]
    assert names(_v1(api), "regarding.fieldPath=spec.containers{web}") == ["web.1"]
    assert names(_v1(api), "source=kubelet,reason=Pulling") == ["web.1"]
    for resource, label in ((_v1(api), "involvedObject.name"), (_v1(api), "note"),
                            (_core(api), "regarding.name"), (_core(api), "message")):
        with pytest.raises(statuses.ApiError) as unsupported:
            api.list(resource, field_selector=f"{label}=x")
        assert unsupported.value.message == f"field label not supported: {label}"
    watch = api.watch(_v1(api), namespace="default", field_selector="regarding.name=web",
                      resource_version=api.list(_core(api))["metadata"]["resourceVersion"])
    await api.create(_core(api), _core_event("web.3"), namespace="default")
    await api.create(_core(api), _core_event(
        "db.1", involvedObject={"kind": "Pod", "namespace": "default", "name": "db"}),
        namespace="default")
    etype, obj = await _next(watch)
    assert (etype, obj["metadata"]["name"], obj["regarding"]["name"]) == ("ADDED", "web.3", "web")
    assert watch.pending == 0


async def test_events_expire_after_the_ttl_unless_written_again(api: ApiServer) -> None:
    api.event_ttl = 2.0  # kube-apiserver's --event-ttl, shortened
    watch = api.watch(_v1(api), namespace="default")
    await api.create(_core(api), _core_event("renewed"), namespace="default")
    await api.create(_core(api), _core_event("short"), namespace="default")
    # a write leases the Event anew: the first one created now expires last
    await api.patch(_core(api), namespace="default", name="renewed",
                    patch_type=STRATEGIC_PATCH, patch={"count": 3})
    assert [(await _next(watch))[0] for _ in range(3)] == ["ADDED", "ADDED", "MODIFIED"]
    etype, obj = await _next(watch)
    assert (etype, obj["metadata"]["name"]) == ("DELETED", "short")
    assert int(obj["metadata"]["resourceVersion"]) > 0
    etype, obj = await _next(watch)
    assert (etype, obj["metadata"]["name"]) == ("DELETED", "renewed")
    assert api.list(_core(api))["items"] == []


# --- printing ----------------------------------------------------------------------------

def _stamp(seconds_ago: float, *, micro: bool = False) -> str:
    """A timestamp whole minutes ago (ages of ten minutes or more print as "<n>m" for a
    whole minute, however slow the test)."""
    moment = time.gmtime(time.time() - seconds_ago)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", moment)
    return f"{text}.000000Z" if micro else f"{text}Z"


def test_events_print_as_kube_apiserver_prints_them(api: ApiServer) -> None:
    legacy = to_internal(_core_event(firstTimestamp=_stamp(50 * 60), lastTimestamp=_stamp(20 * 60)))
    table = tables.to_table(_core(api), [legacy])
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0),
                       ("Subobject", 1), ("Source", 1), ("Message", 0), ("First Seen", 1),
                       ("Count", 1), ("Name", 1)]
    assert table["rows"][0]["cells"] == [
        "20m", "Normal", "Pulling", "pod/web", "spec.containers{web}", "kubelet, node-1",
        'Pulling image "nginx"', "50m", 2, "web.1"]
    # a new-style event: First Seen is its eventTime, Last Seen its series' last observation,
    # Count the series' count; listed through events.k8s.io/v1 it prints the same
    new = to_events_v1(to_internal(_new_event(
        eventTime=_stamp(30 * 60, micro=True),
        series={"count": 4, "lastObservedTime": _stamp(25 * 60, micro=True)},
        regarding={"kind": "Node", "name": ""})))
    cells = tables.to_table(_v1(api), [new])["rows"][0]["cells"]
    assert cells == ["25m", "Normal", "Scheduled", "node", "",
                     "default-scheduler, default-scheduler-kubesim",
                     "Successfully assigned default/web to node-1", "30m", 4, "web.2"]
    singleton = to_internal(_new_event(eventTime=_stamp(45 * 60, micro=True)))
    cells = tables.to_table(_core(api), [singleton])["rows"][0]["cells"]
    assert (cells[0], cells[7], cells[8]) == ("45m", "45m", 1)
