"""Events as kubectl 1.37 sees them: core/v1 and events.k8s.io/v1 over one storage, field
selectors, `get events` tables and watches, `kubectl events`, `describe pod`, validation errors,
and expiry."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kubesim.running import Cluster
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration


# Ages in whole minutes of ten or more print as "<n>m" for a whole minute (HumanDuration), so
# the tables read the same however long the test takes to print them.
FIRST_SEEN, LAST_SEEN, EVENT_TIME, OBSERVED = 50 * 60, 20 * 60, 30 * 60, 25 * 60


def _now(*, micro: bool = False, ago: float = 0.0) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - ago))
    return f"{text}.000000Z" if micro else f"{text}Z"


def _core_event(name: str, pod: str = "web", uid: str = "", **fields: Any) -> str:
    """What client-go's tools/record writes: a legacy core/v1 Event about a pod."""
    event: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "uid": uid,
                           "apiVersion": "v1", "fieldPath": "spec.containers{web}"},
        "reason": "Pulling", "message": 'Pulling image "nginx"',
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": _now(ago=FIRST_SEEN), "lastTimestamp": _now(ago=LAST_SEEN), "count": 3,
        "type": "Normal",
    }
    event.update(fields)
    return json.dumps(event)


def _new_event(name: str, pod: str = "web", uid: str = "", **fields: Any) -> str:
    """What client-go's tools/events (kube-scheduler) writes: an events.k8s.io/v1 Event."""
    event: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": _now(micro=True, ago=EVENT_TIME), "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-kubesim", "action": "Binding",
        "reason": "Scheduled", "type": "Normal",
        "regarding": {"kind": "Pod", "namespace": "default", "name": pod, "uid": uid,
                      "apiVersion": "v1"},
        "note": f"Successfully assigned default/{pod} to node-1",
    }
    event.update(fields)
    return json.dumps(event)


async def _line_with(proc: asyncio.subprocess.Process, *words: str,
                     timeout: float = 30) -> str:
    """The first line a running kubectl prints that holds every one of `words`."""
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), max(deadline - loop.time(), 0.01))
        assert raw, "kubectl ended before printing the line"
        if all(word in raw.decode() for word in words):
            return raw.decode()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def test_an_event_written_through_one_api_is_read_through_the_other(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    await kubectl.run("create", "-f", "-", stdin=_core_event("web.legacy"))
    await kubectl.run("create", "-f", "-", stdin=_new_event("web.new"))

    legacy = (await kubectl.run("get", "events.events.k8s.io", "web.legacy", "-o",
                                "json")).json()
    assert legacy["apiVersion"] == "events.k8s.io/v1"
    assert legacy["note"] == 'Pulling image "nginx"' and legacy["regarding"]["name"] == "web"
    assert legacy["deprecatedCount"] == 3
    assert legacy["deprecatedSource"] == {"component": "kubelet", "host": "node-1"}
    assert legacy["eventTime"] is None

    new = (await kubectl.run("get", "event", "web.new", "-o", "json")).json()
    assert new["apiVersion"] == "v1"
    assert new["message"] == "Successfully assigned default/web to node-1"
    assert new["involvedObject"]["name"] == "web"
    assert (new["reportingComponent"], new["action"]) == ("default-scheduler", "Binding")
    assert new["firstTimestamp"] is None and new["source"] == {}

    # one storage: one resourceVersion sequence, the same objects in both lists
    lists = [(await kubectl.run("get", resource, "-o", "json")).json()
             for resource in ("events", "events.events.k8s.io")]
    assert lists[0]["metadata"]["resourceVersion"] == lists[1]["metadata"]["resourceVersion"]
    assert [(i["metadata"]["name"], i["metadata"]["resourceVersion"]) for i in lists[0]["items"]
            ] == [(i["metadata"]["name"], i["metadata"]["resourceVersion"])
                  for i in lists[1]["items"]]
    assert int(new["metadata"]["resourceVersion"]) > int(legacy["metadata"]["resourceVersion"])

    deleted = await kubectl.run("delete", "events.events.k8s.io", "web.legacy")
    assert 'event.events.k8s.io "web.legacy" deleted' in deleted.stdout
    gone = await kubectl.run("get", "event", "web.legacy", check=False)
    assert 'events "web.legacy" not found' in gone.stderr


async def test_a_watch_through_either_api_sees_writes_through_the_other(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    new_watch = await kubectl.start("get", "events.events.k8s.io", "-w", "-o", "json",
                                    "--output-watch-events")
    core_watch = await kubectl.start("get", "events", "-w", "-o", "json",
                                     "--output-watch-events")
    try:
        await kubectl.run("create", "-f", "-", stdin=_core_event("via-core"))
        await kubectl.run("create", "-f", "-", stdin=_new_event("via-events"))
        # kubectl prints each watch event as one line of JSON, in the watched API's form
        line = await _line_with(new_watch, '"name":"via-core"')
        seen = json.loads(line)
        assert (seen["type"], seen["object"]["apiVersion"]) == ("ADDED", "events.k8s.io/v1")
        assert seen["object"]["note"] == 'Pulling image "nginx"'
        line = await _line_with(core_watch, '"name":"via-events"')
        seen = json.loads(line)
        assert (seen["object"]["apiVersion"], seen["object"]["reportingComponent"]) == (
            "v1", "default-scheduler")
        await kubectl.run("delete", "event", "via-events")
        await _line_with(new_watch, '"type":"DELETED"', '"name":"via-events"')
    finally:
        await _stop(new_watch)
        await _stop(core_watch)


async def test_field_selectors_of_both_apis(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=_core_event("web.pull"))
    await kubectl.run("create", "-f", "-", stdin=_new_event("web.sched"))
    await kubectl.run("create", "-f", "-", stdin=_core_event("db.pull", pod="db"))

    async def names(*args: str) -> list[str]:
        out = await kubectl.run("get", *args, "-o", "jsonpath={.items[*].metadata.name}")
        return out.stdout.split()

    assert await names("events", "--field-selector", "involvedObject.name=web") == [
        "web.pull", "web.sched"]
    assert await names("events", "--field-selector",
                       "involvedObject.kind=Pod,reason=Pulling,type=Normal") == [
        "db.pull", "web.pull"]
    assert await names("events", "--field-selector", "source=default-scheduler") == [
        "web.sched"]
    assert await names("events.events.k8s.io", "--field-selector",
                       "regarding.name=web,reportingController!=default-scheduler") == [
        "web.pull"]
    wrong = await kubectl.run("get", "events.events.k8s.io", "--field-selector",
                              "involvedObject.name=web", check=False)
    assert wrong.returncode != 0
    assert "field label not supported: involvedObject.name" in wrong.stderr


async def test_kubectl_get_events_prints_like_a_cluster(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    await kubectl.run("create", "-f", "-", stdin=_core_event("web.pull"))
    await kubectl.run("create", "-f", "-", stdin=_new_event(
        "web.sched", series={"count": 4, "lastObservedTime": _now(micro=True, ago=OBSERVED)}))

    table = (await kubectl.run("get", "events", "-A")).stdout.splitlines()
    assert table[0].split() == ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT",
                                "MESSAGE"]
    rows = {line.split()[3]: line.split() for line in table[1:]}
    assert rows["Pulling"][:6] == ["default", "20m", "Normal", "Pulling", "pod/web", "Pulling"]
    # Last Seen of a series is its last observation
    assert rows["Scheduled"][:5] == ["default", "25m", "Normal", "Scheduled", "pod/web"]

    wide = (await kubectl.run("get", "events", "-o", "wide")).stdout.splitlines()
    header = wide[0]
    for column in ("SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"):
        assert column in header
    pulling = next(line for line in wide[1:] if "Pulling" in line)
    assert "spec.containers{web}" in pulling and "kubelet, node-1" in pulling
    assert pulling.split()[-3:] == ["50m", "3", "web.pull"]
    scheduled = next(line for line in wide[1:] if "Scheduled" in line)
    assert "default-scheduler, default-scheduler-kubesim" in scheduled
    assert scheduled.split()[-3:] == ["30m", "4", "web.sched"]

    # events.events.k8s.io prints with the same printer
    new_api = (await kubectl.run("get", "events.events.k8s.io")).stdout.splitlines()
    assert new_api[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(new_api) == 3

    selected = (await kubectl.run("get", "events", "--field-selector",
                                  "involvedObject.name=web,reason=Pulling")).stdout
    assert len(selected.splitlines()) == 2 and "Pulling" in selected


async def test_kubectl_get_events_watch_prints_new_events(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    proc = await kubectl.start("get", "events", "-w")
    try:
        # kubectl prints its header once the (empty) list is done; then rows as they come
        await kubectl.run("create", "-f", "-", stdin=_core_event("web.pull"))
        row = (await _line_with(proc, "Pulling")).split()
        assert row[1:4] == ["Normal", "Pulling", "pod/web"]
        await kubectl.run("create", "-f", "-", stdin=_new_event("web.sched"))
        row = (await _line_with(proc, "Scheduled")).split()
        assert row[:4] == ["30m", "Normal", "Scheduled", "pod/web"]
    finally:
        await _stop(proc)


async def test_kubectl_events_and_describe_pod_show_the_pods_events(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    await kubectl.run("run", "web", "--image=nginx")
    uid = (await kubectl.run("get", "pod", "web", "-o",
                             "jsonpath={.metadata.uid}")).stdout.strip()
    await kubectl.run("create", "-f", "-", stdin=_core_event("web.pull", uid=uid))
    await kubectl.run("create", "-f", "-", stdin=_new_event("web.sched", uid=uid))
    # about another pod, and about an earlier pod of the same name (another uid)
    await kubectl.run("create", "-f", "-", stdin=_core_event("db.pull", pod="db"))
    await kubectl.run("create", "-f", "-", stdin=_core_event("web.old", uid="old-uid",
                                                              reason="Killing"))

    described = (await kubectl.run("describe", "pod", "web")).stdout
    section = described[described.index("\nEvents:") + 1:].splitlines()[1:]
    assert section[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [line.split() for line in section[2:] if line.strip()]
    assert [row[1] for row in rows] == ["Scheduled", "Pulling"]  # oldest first
    assert rows[0][:4] == ["Normal", "Scheduled", "30m", "default-scheduler"]
    assert rows[1][:7] == ["Normal", "Pulling", "20m", "(x3", "over", "50m)", "kubelet"]

    # kubectl events lists core/v1 Events with field selectors on the involved object
    events = (await kubectl.run("events", "--for", "pod/web")).stdout.splitlines()
    assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(events) == 4  # kubectl events selects on kind and name, not on the uid
    assert any("20m (x3 over 50m)" in line and "Pod/web" in line for line in events[1:])
    assert any("Scheduled" in line for line in events[1:])
    assert not any("db" in line.split()[-1] for line in events[1:])


async def test_validation_errors_as_kubectl_prints_them(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    strict = await kubectl.run("create", "-f", "-", check=False, stdin=_new_event(
        "bad", reportingController="", action="", type="Info", deprecatedCount=2))
    assert strict.returncode != 0
    lines = strict.stderr.splitlines()
    assert lines[0].startswith('The Event "bad" is invalid:')
    assert "* reportingComponent: Required value" in lines
    assert "* action: Required value" in lines
    assert '* type: Invalid value: "": has invalid value: Info' in lines
    assert '* count: Invalid value: "": needs to be unset' in lines

    # through core/v1 only the legacy rules apply, and they still tie the namespaces
    legacy = await kubectl.run("create", "-f", "-", check=False, stdin=_core_event(
        "elsewhere", involvedObject={"kind": "Pod", "namespace": "kube-system", "name": "x"}))
    assert legacy.returncode != 0
    assert ('The Event "elsewhere" is invalid: involvedObject.namespace: Invalid value: '
            '"kube-system": does not match event.namespace') in legacy.stderr

    micro = await kubectl.run("create", "-f", "-", check=False,
                              stdin=_new_event("coarse", eventTime=_now()))
    assert micro.returncode != 0
    assert "cannot parse \"Z\" as \".000000\"" in micro.stderr

    await kubectl.run("create", "-f", "-", stdin=_new_event("fixed"))
    changed = await kubectl.run("patch", "events.events.k8s.io", "fixed", "--type=merge",
                                "-p", '{"note": "rewritten"}', check=False)
    assert changed.returncode != 0
    assert 'message: Invalid value: "rewritten": field is immutable' in changed.stderr
    series = await kubectl.run(
        "patch", "events.events.k8s.io", "fixed", "--type=merge", "-p",
        json.dumps({"series": {"count": 2, "lastObservedTime": _now(micro=True)}}))
    assert "patched" in series.stdout


async def test_events_expire_with_a_deleted_watch_event(
    kube_api: Cluster, kubectl: Kubectl,
) -> None:
    proc = await kubectl.start("get", "events", "-w", "--output-watch-events")
    try:
        # an Event of the default hour's lease shows the watch is there
        await kubectl.run("create", "-f", "-", stdin=_core_event("lasting", reason="Started"))
        await _line_with(proc, "ADDED", "Started")
        kube_api.api.event_ttl = 1.0  # kube-apiserver --event-ttl, shortened
        await kubectl.run("create", "-f", "-", stdin=_core_event("fleeting"))
        assert (await _line_with(proc, "ADDED", "Pulling")).split()[0] == "ADDED"
        assert (await _line_with(proc, "DELETED", "Pulling")).split()[0] == "DELETED"
    finally:
        await _stop(proc)
    missing = await kubectl.run("get", "event", "fleeting", check=False)
    assert 'events "fleeting" not found' in missing.stderr
    await kubectl.run("get", "event", "lasting")
