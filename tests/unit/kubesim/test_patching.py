"""kubesim.patching: the three patch types as kube-apiserver applies them.

The strategic merge cases follow the documented behaviour of
k8s.io/apimachinery/pkg/util/strategicpatch (including the orderings its own
tests pin down); the error statuses follow k8s.io/apiserver's patch handler.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kubesim import statuses
from kubesim.patching import (
    MAX_JSON_PATCH_OPERATIONS,
    MERGE_KEYS,
    PRIMITIVE_SET,
    JSONPatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

REJECTED = "the server rejected our request due to an error in our request"

scalars = st.one_of(
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=6),
)
member_names = st.text(alphabet="ab~/c-", min_size=1, max_size=4)
json_values = st.recursive(
    st.one_of(st.none(), scalars),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(member_names, inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(member_names, json_values, max_size=5)
null_free_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(member_names, inner, max_size=4),
    max_leaves=20,
)
null_free_objects = st.dictionaries(member_names, null_free_values, max_size=5)


def api_error(call: Any, *args: Any, **kwargs: Any) -> statuses.ApiError:
    with pytest.raises(statuses.ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_untouched_and_unshared(before: Any, after: Any, result: Any) -> None:
    assert before == after
    if isinstance(result, dict | list):
        result_ids = {id(c) for c in containers(result)}
        assert result_ids.isdisjoint(id(c) for c in containers(after))


def containers(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(value)
        for v in value.values():
            found.extend(containers(v))
    elif isinstance(value, list):
        found.append(value)
        for v in value:
            found.extend(containers(v))
    return found


# -- merge patch (RFC 7386) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        # RFC 7386, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # lists are never merged
        ({"m": {"finalizers": ["a"]}}, {"m": {"finalizers": ["b"]}}, {"m": {"finalizers": ["b"]}}),
    ],
)
def test_merge_patch(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before


def test_merge_patch_result_shares_nothing() -> None:
    target = {"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}]}}
    patch = {"metadata": {"annotations": {"x": {"deep": ["y"]}}}}
    snapshot = copy.deepcopy(target)
    result = merge_patch(target, patch)
    assert_untouched_and_unshared(snapshot, target, result)
    result["metadata"]["annotations"]["x"]["deep"].append("z")
    assert patch == {"metadata": {"annotations": {"x": {"deep": ["y"]}}}}


def diff(source: Any, target: Any) -> Any:
    """A merge patch that turns `source` into `target` (RFC 7386 section 3, reversed)."""
    if not isinstance(source, dict) or not isinstance(target, dict):
        return target
    patch: dict[str, Any] = {k: None for k in source if k not in target}
    for key, value in target.items():
        if key not in source:
            patch[key] = value
        elif source[key] != value or type(source[key]) is not type(value):
            patch[key] = diff(source[key], value)
    return patch


@given(json_objects, null_free_objects)
def test_merge_patch_of_a_diff_reproduces_the_target(source: Any, target: Any) -> None:
    assert merge_patch(source, diff(source, target)) == target


@given(json_objects, json_objects)
def test_merge_patch_is_idempotent(target: Any, patch: Any) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


# -- JSON patch (RFC 6902) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "ops", "result"),
    [
        # RFC 6902, Appendix A
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~1", "value": 9}], {"/": 9, "~1": 10}),
        # beyond the appendix
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1}),
        ({"a": [1]}, [{"op": "add", "path": "/a/1", "value": 2}], {"a": [1, 2]}),
        ({"a": [1]}, [{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1]}),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
        ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
        ({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1.0}}], {"a": 1}),
        (
            {"a": {"b": [1, {"c": 2}]}},
            [{"op": "replace", "path": "/a/b/1/c", "value": 3}],
            {"a": {"b": [1, {"c": 3}]}},
        ),
        ({"a": 1}, [], {"a": 1}),
        ({"a": 1}, None, {"a": 1}),
        ({"a": None}, [{"op": "test", "path": "/a", "value": None}], {"a": None}),
        ({"": 1}, [{"op": "remove", "path": "/"}], {}),
        (
            {"metadata": {"labels": {"app.kubernetes.io/name": "x"}}},
            [{"op": "replace", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "y"}],
            {"metadata": {"labels": {"app.kubernetes.io/name": "y"}}},
        ),
    ],
)
def test_json_patch(target: Any, ops: Any, result: Any) -> None:
    before = copy.deepcopy((target, ops))
    assert json_patch(target, ops) == result
    assert (target, ops) == before


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            {"op": "add", "path": "/a", "value": 1},
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ),
        ("[]", "json: cannot unmarshal string into Go value of type jsonpatch.Patch"),
        (7, "json: cannot unmarshal number into Go value of type jsonpatch.Patch"),
        (["add"], "json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
        (
            [[{"op": "add"}]],
            "json: cannot unmarshal array into Go value of type jsonpatch.Operation",
        ),
    ],
)
def test_a_patch_that_is_not_a_list_of_objects_is_a_bad_request(ops: Any, message: str) -> None:
    error = api_error(json_patch, {"a": 1}, ops)
    assert (error.code, error.reason, error.message) == (400, "BadRequest", message)


@pytest.mark.parametrize(
    ("target", "op", "cause"),
    [
        (
            {"foo": "bar"},
            {"op": "test", "path": "/foo", "value": "baz"},
            "testing value /foo failed: test failed",
        ),
        (
            {"foo": "bar"},
            {"op": "add", "path": "/baz/bat", "value": "qux"},
            'add operation does not apply: doc is missing path: "/baz/bat"',
        ),
        (
            {"/": 9, "~1": 10},
            {"op": "test", "path": "/~01", "value": "10"},
            "testing value /~01 failed: test failed",
        ),
        (
            {"a": True},
            {"op": "test", "path": "/a", "value": 1},
            "testing value /a failed: test failed",
        ),
        (
            {"a": [1]},
            {"op": "test", "path": "/a", "value": [1, 2]},
            "testing value /a failed: test failed",
        ),
        (
            {"a": 1},
            {"op": "test", "path": "/b", "value": None},
            "test operation does not apply: is missing path: /b: missing value",
        ),
        (
            {"a": 1},
            {"op": "remove", "path": "/b"},
            "Unable to remove nonexistent key: b: missing value",
        ),
        (
            {"a": 1},
            {"op": "replace", "path": "/b", "value": 2},
            "replace operation does not apply: doc is missing key: /b: missing value",
        ),
        (
            {"a": [1]},
            {"op": "add", "path": "/a/2", "value": 2},
            "Unable to access invalid index: 2: invalid index referenced",
        ),
        (
            {"a": [1]},
            {"op": "add", "path": "/a/-1", "value": 2},
            "Unable to access invalid index: -1: invalid index referenced",
        ),
        (
            {"a": [1, 2]},
            {"op": "remove", "path": "/a/01"},
            "Unable to access invalid index: 01: invalid index referenced",
        ),
        (
            {"a": [1]},
            {"op": "remove", "path": "/a/1"},
            "Unable to access invalid index: 1: invalid index referenced",
        ),
        (
            {"a": [1]},
            {"op": "remove", "path": "/a/-"},
            "Unable to access invalid index: -: invalid index referenced",
        ),
        (
            {"a": [1]},
            {"op": "replace", "path": "/a/1", "value": 2},
            "replace operation does not apply: doc is missing key: /a/1: missing value",
        ),
        (
            {"a": "s"},
            {"op": "add", "path": "/a/b", "value": 2},
            'add operation does not apply: doc is missing path: "/a/b"',
        ),
        (
            {"a": 1},
            {"op": "add", "path": "", "value": {}},
            'add operation does not apply: doc is missing path: ""',
        ),
        (
            {"a": 1},
            {"op": "remove", "path": ""},
            'remove operation does not apply: doc is missing path: ""',
        ),
        (
            {"a": 1},
            {"op": "replace", "path": "", "value": 3},
            "replace operation value must be object or array",
        ),
        (
            {"a": {"b": 1}},
            {"op": "move", "from": "/a", "path": "/a/c"},
            "move operation does not apply: cannot move /a into its own child",
        ),
        (
            {"a": 1},
            {"op": "move", "from": "/x", "path": "/y"},
            "move operation does not apply: doc is missing from path: /x: missing value",
        ),
        (
            {"a": 1},
            {"op": "copy", "from": "/x", "path": "/y"},
            "copy operation does not apply: doc is missing from path: /x: missing value",
        ),
        (
            {"a": 1},
            {"op": "add", "path": "a", "value": 1},
            'add operation does not apply: doc is missing path: "a"',
        ),
        (
            {"a": 1},
            {"op": "add", "path": "/~2", "value": 1},
            "add operation: invalid JSON pointer: /~2",
        ),
        # what evanphx/json-patch only finds while applying is a 422 too
        ({"a": 1}, {"op": "frobnicate", "path": "/a"}, "Unexpected kind: frobnicate"),
        ({"a": 1}, {"path": "/a"}, "Unexpected kind: unknown"),
        ({"a": 1}, {"op": 3, "path": "/a"}, "Unexpected kind: unknown"),
        ({"a": 1}, {"op": "add", "value": 1}, "add operation failed to decode path: missing value"),
        (
            {"a": 1},
            {"op": "add", "path": 5, "value": 1},
            "add operation failed to decode path: json: cannot unmarshal number into Go value of "
            "type string",
        ),
        (
            {"a": 1},
            {"op": "add", "path": "/b"},
            "add operation, missing value field: missing value",
        ),
        (
            {"a": 1},
            {"op": "move", "path": "/b"},
            "move operation failed to decode from: missing value",
        ),
    ],
)
def test_an_operation_that_cannot_apply_is_unprocessable(
    target: dict[str, Any], op: dict[str, Any], cause: str
) -> None:
    before = copy.deepcopy(target)
    error = api_error(json_patch, target, [op])
    assert isinstance(error, JSONPatchError)
    assert error.cause == cause
    assert error.status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": REJECTED,
        "reason": "Invalid",
        "code": 422,
        "details": {},
    }
    assert target == before


def test_a_failing_operation_undoes_the_earlier_ones() -> None:
    target = {"metadata": {"labels": {"a": "1"}}}
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "test", "path": "/metadata/labels/a", "value": "2"},
    ]
    with pytest.raises(JSONPatchError):
        json_patch(target, ops)
    assert target == {"metadata": {"labels": {"a": "1"}}}


def test_too_many_operations() -> None:
    ops = [{"op": "test", "path": "", "value": {}}] * (MAX_JSON_PATCH_OPERATIONS + 1)
    error = api_error(json_patch, {}, ops)
    assert error.code == 413
    assert error.reason == "RequestEntityTooLarge"
    assert error.message == "The allowed maximum operations in a JSON patch is 10000, got 10001"
    assert json_patch({}, ops[:MAX_JSON_PATCH_OPERATIONS]) == {}


def test_json_patch_values_are_copied() -> None:
    value = {"deep": ["x"]}
    target: dict[str, Any] = {"a": {"b": [1]}}
    result = json_patch(
        target,
        [
            {"op": "add", "path": "/v", "value": value},
            {"op": "copy", "from": "/a", "path": "/c"},
        ],
    )
    result["v"]["deep"].append("y")
    result["c"]["b"].append(2)
    assert value == {"deep": ["x"]}
    assert result["a"] == {"b": [1]}
    assert target == {"a": {"b": [1]}}


def pointer(path: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def paths(value: Any, prefix: list[str] | None = None) -> list[list[str]]:
    prefix = prefix or []
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(paths(child, [*prefix, key]))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(paths(child, [*prefix, str(index)]))
    return found


def lookup(value: Any, path: list[str]) -> Any:
    for part in path:
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


@given(json_objects, st.data())
def test_testing_any_member_against_its_own_value_succeeds(doc: Any, data: Any) -> None:
    path = data.draw(st.sampled_from(paths(doc)))
    ops = [{"op": "test", "path": pointer(path), "value": lookup(doc, path)}]
    assert json_patch(doc, ops) == doc


@given(json_objects, member_names, json_values)
def test_add_then_remove_restores_the_document(doc: Any, key: str, value: Any) -> None:
    doc.pop(key, None)
    added = json_patch(doc, [{"op": "add", "path": pointer([key]), "value": value}])
    assert added == {**doc, key: value}
    assert json_patch(added, [{"op": "remove", "path": pointer([key])}]) == doc


@given(json_objects, st.data())
def test_removing_then_adding_back_any_member_restores_it(doc: Any, data: Any) -> None:
    members = paths(doc)[1:]
    assume(members)
    path = data.draw(st.sampled_from(members))
    value = lookup(doc, path)
    ops = [
        {"op": "remove", "path": pointer(path)},
        {"op": "add", "path": pointer(path), "value": value},
    ]
    assert json_patch(doc, ops) == doc


# -- strategic merge patch ---------------------------------------------------------------------


def smp(target: dict[str, Any], patch: Any, kind: str = "Pod") -> dict[str, Any]:
    before = copy.deepcopy((target, patch))
    result = strategic_merge_patch(target, patch, kind=kind)
    assert (target, patch) == before
    assert_untouched_and_unshared(before[0], target, result)
    return result


def smp_error(target: dict[str, Any], patch: Any, kind: str = "Pod") -> statuses.ApiError:
    before = copy.deepcopy((target, patch))
    error = api_error(strategic_merge_patch, target, patch, kind=kind)
    assert (target, patch) == before
    return error


def names(items: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "labels": {"app": "web", "tier": "front"},
        "finalizers": ["a.example.com/x", "a.example.com/y"],
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "app:1",
                "args": ["--a", "--b"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            {"name": "sidecar", "image": "sidecar:1"},
        ],
        "initContainers": [{"name": "init", "image": "init:1"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "imagePullSecrets": [{"name": "pull"}],
        "tolerations": [{"key": "k1", "operator": "Exists"}],
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "containerStatuses": [
            {"name": "app", "ready": True, "restartCount": 0},
            {"name": "sidecar", "ready": True, "restartCount": 0},
        ],
    },
}


def test_maps_merge_and_null_deletes() -> None:
    result = smp(
        POD, {"metadata": {"labels": {"tier": None, "new": "x"}, "annotations": {"a": "b"}}}
    )
    assert result["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert result["metadata"]["annotations"] == {"a": "b"}
    assert result["spec"] == POD["spec"]
    assert smp(POD, {"status": None}).get("status") is None
    assert "status" not in smp(POD, {"status": None})


def test_containers_merge_by_name() -> None:
    result = smp(POD, {"spec": {"containers": [{"name": "sidecar", "image": "sidecar:2"}]}})
    containers = result["spec"]["containers"]
    assert names(containers) == ["app", "sidecar"]
    assert containers[1] == {"name": "sidecar", "image": "sidecar:2"}
    assert containers[0] == POD["spec"]["containers"][0]


def test_a_new_list_element_comes_first_without_set_element_order() -> None:
    result = smp(POD, {"spec": {"containers": [{"name": "new", "image": "new:1"}]}})
    assert names(result["spec"]["containers"]) == ["new", "app", "sidecar"]


def test_nested_merge_lists_merge_by_their_own_keys() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    "args": ["--c"],
                }
            ],
        }
    }
    app = smp(POD, patch)["spec"]["containers"][0]
    # A precedes B in the live list, so it stays in front; C is new and follows B
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]
    assert app["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    assert app["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]
    # args has no patch strategy: replaced
    assert app["args"] == ["--c"]
    assert app["image"] == "app:1"


def test_pod_spec_lists_with_merge_keys() -> None:
    patch = {
        "spec": {
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "imagePullSecrets": [{"name": "other"}],
            "initContainers": [{"name": "init", "image": "init:2"}],
        }
    }
    spec = smp(POD, patch)["spec"]
    assert names(spec["volumes"]) == ["cache", "data"]
    assert names(spec["imagePullSecrets"]) == ["other", "pull"]
    assert spec["initContainers"] == [{"name": "init", "image": "init:2"}]


def test_atomic_lists_are_replaced() -> None:
    patch = {
        "spec": {"tolerations": [{"key": "k2", "operator": "Exists"}]},
        "status": {"containerStatuses": [{"name": "app", "ready": False, "restartCount": 1}]},
    }
    result = smp(POD, patch)
    assert result["spec"]["tolerations"] == [{"key": "k2", "operator": "Exists"}]
    assert result["status"]["containerStatuses"] == [
        {"name": "app", "ready": False, "restartCount": 1}
    ]


def test_conditions_merge_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Probe"}]}}
    conditions = smp(POD, patch)["status"]["conditions"]
    assert conditions == [
        {"type": "Ready", "status": "False", "reason": "Probe"},
        {"type": "PodScheduled", "status": "True"},
    ]


def test_owner_references_merge_by_uid() -> None:
    patch = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u2"},
                {"uid": "u1", "controller": True},
            ]
        }
    }
    refs = smp(POD, patch)["metadata"]["ownerReferences"]
    assert names(refs, "uid") == ["u2", "u1"]
    assert refs[1] == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "rs",
        "uid": "u1",
        "controller": True,
    }


def test_finalizers_merge_as_a_set() -> None:
    def finalizers(current: list[str], patch: dict[str, Any]) -> list[str]:
        result = smp({"metadata": {"finalizers": current}}, {"metadata": patch}, "ConfigMap")
        return list(result["metadata"].get("finalizers", []))

    assert finalizers(["a", "b"], {"finalizers": ["b", "c"]}) == ["a", "b", "c"]
    assert finalizers(["a", "b"], {"finalizers": ["c"]}) == ["c", "a", "b"]
    assert finalizers(["a", "b"], {"finalizers": ["c", "c"]}) == ["c", "a", "b"]
    assert finalizers(["a", "b", "c"], {"$deleteFromPrimitiveList/finalizers": ["b", "z"]}) == [
        "a",
        "c",
    ]
    assert finalizers(
        ["a"], {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["n"]}
    ) == ["n"]
    assert finalizers(["a", "b"], {"finalizers": None}) == []
    assert finalizers([], {"finalizers": ["a"]}) == ["a"]
    # the patch's order wins for the elements it names
    assert finalizers(["1", "2", "3"], {"finalizers": ["3", "1", "2"]}) == ["3", "1", "2"]
    assert finalizers(["1", "2", "3"], {"finalizers": ["3", "1"]}) == ["2", "3", "1"]


def test_set_element_order_orders_a_primitive_list() -> None:
    result = smp(
        {"metadata": {"finalizers": ["1", "2"]}},
        {"metadata": {"$setElementOrder/finalizers": ["3", "1", "2"], "finalizers": ["3"]}},
        "Secret",
    )
    assert result["metadata"]["finalizers"] == ["3", "1", "2"]
    result = smp(
        {"metadata": {"finalizers": ["1", "2", "3"]}},
        {
            "metadata": {
                "$setElementOrder/finalizers": ["2", "1"],
                "$deleteFromPrimitiveList/finalizers": ["3"],
            }
        },
        "Secret",
    )
    assert result["metadata"]["finalizers"] == ["2", "1"]
    # an ordering entry that is not in the list is ignored
    result = smp(
        {"metadata": {"finalizers": ["1", "3"]}},
        {"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}},
        "Secret",
    )
    assert result["metadata"]["finalizers"] == ["3", "1"]


def test_set_element_order_orders_a_list_of_maps() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "new"}, {"name": "app"}],
            "containers": [{"name": "new", "image": "new:1"}],
        }
    }
    containers = smp(POD, patch)["spec"]["containers"]
    assert names(containers) == ["sidecar", "new", "app"]
    assert containers[1] == {"name": "new", "image": "new:1"}


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar", "image": "s"}, {"name": "app", "image": "a"}],
        }
    }
    error = smp_error(POD, patch)
    assert error.code == 500
    assert error.reason == ""
    assert "doesn't match $setElementOrder list" in error.message


def test_patch_delete_directive_removes_list_elements() -> None:
    patch = {
        "spec": {
            "containers": [{"name": "sidecar", "$patch": "delete"}],
            "volumes": [{"name": "nope", "$patch": "delete"}],
        }
    }
    spec = smp(POD, patch)["spec"]
    assert names(spec["containers"]) == ["app"]
    assert names(spec["volumes"]) == ["data"]


def test_patch_delete_removes_every_duplicate() -> None:
    target = {"status": {"conditions": [{"type": "A"}, {"type": "A"}, {"type": "B", "x": 1}]}}
    patch = {"status": {"conditions": [{"type": "A", "$patch": "delete"}]}}
    assert smp(target, patch, "Deployment")["status"]["conditions"] == [{"type": "B", "x": 1}]


def test_patch_replace_directive_replaces_a_merge_list() -> None:
    patch = {"spec": {"containers": [{"name": "only", "image": "only:1"}, {"$patch": "replace"}]}}
    assert smp(POD, patch)["spec"]["containers"] == [{"name": "only", "image": "only:1"}]
    assert smp(POD, {"spec": {"volumes": [{"$patch": "replace"}]}})["spec"]["volumes"] == []


def test_patch_directives_on_maps() -> None:
    replaced = smp(POD, {"metadata": {"labels": {"$patch": "replace", "only": "me"}}})
    assert replaced["metadata"]["labels"] == {"only": "me"}
    emptied = smp(POD, {"metadata": {"labels": {"$patch": "delete"}}})
    assert emptied["metadata"]["labels"] == {}
    whole = smp(POD, {"$patch": "replace", "metadata": {"name": "other"}})
    assert whole == {"metadata": {"name": "other"}}
    # a directive map for a member the object lacks is dropped, not added
    absent = smp(POD, {"spec": {"affinity": {"$patch": "replace", "nodeAffinity": {}}}})
    assert "affinity" not in absent["spec"]


def test_retain_keys_clears_unlisted_members() -> None:
    target = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert smp(target, patch, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_must_list_every_patched_member() -> None:
    target = {"spec": {"strategy": {"type": "RollingUpdate"}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}
    error = smp_error(target, patch, "Deployment")
    assert (error.code, error.message) == (400, "invalid patch format of retainKeys")
    error = smp_error(target, {"spec": {"strategy": {"$retainKeys": "type"}}}, "Deployment")
    assert (error.code, error.message) == (400, "invalid patch format of retainKeys")


def test_pod_templates_merge_like_pods() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]
        },
    }
    patch_template = {
        "spec": {
            "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]
        }
    }
    for kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"):
        result = smp({"spec": {"template": template}}, {"spec": {"template": patch_template}}, kind)
        (container,) = result["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "app:2", kind
        assert names(container["env"]) == ["B", "A"], kind
    cron = smp(
        {"spec": {"jobTemplate": {"spec": {"template": template}}}},
        {"spec": {"jobTemplate": {"spec": {"template": patch_template}}}},
        "CronJob",
    )
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert names(container["env"]) == ["B", "A"]


def test_workload_status_conditions_merge_by_type() -> None:
    target = {
        "status": {
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"},
            ]
        }
    }
    patch = {"status": {"conditions": [{"type": "Progressing", "status": "False"}]}}
    for kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "Namespace"):
        conditions = smp(target, patch, kind)["status"]["conditions"]
        assert conditions == [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "False"},
        ], kind


def test_node_lists() -> None:
    node = {
        "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    patch = {
        "spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b", "effect": "NoExecute"}]},
        "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}],
            "conditions": [{"type": "Ready", "status": "False"}],
        },
    }
    result = smp(node, patch, "Node")
    assert result["spec"]["podCIDRs"] == ["fd00::/64", "10.0.0.0/24"]
    assert result["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
    assert names(result["status"]["addresses"], "type") == ["Hostname", "InternalIP"]
    assert result["status"]["conditions"] == [{"type": "Ready", "status": "False"}]


def test_service_account_secrets_merge_but_image_pull_secrets_do_not() -> None:
    account = {"secrets": [{"name": "s1"}], "imagePullSecrets": [{"name": "p1"}]}
    result = smp(
        account,
        {"secrets": [{"name": "s2"}], "imagePullSecrets": [{"name": "p2"}]},
        "ServiceAccount",
    )
    assert names(result["secrets"]) == ["s2", "s1"]
    assert result["imagePullSecrets"] == [{"name": "p2"}]


def test_webhooks_merge_by_name() -> None:
    config = {
        "webhooks": [
            {
                "name": "a.example.com",
                "matchConditions": [{"name": "c1", "expression": "true"}],
                "rules": [{"operations": ["CREATE"]}],
            },
            {"name": "b.example.com"},
        ]
    }
    patch = {
        "webhooks": [
            {
                "name": "a.example.com",
                "matchConditions": [{"name": "c1", "expression": "false"}],
                "rules": [{"operations": ["UPDATE"]}],
            }
        ]
    }
    result = smp(config, patch, "MutatingWebhookConfiguration")
    assert names(result["webhooks"]) == ["a.example.com", "b.example.com"]
    assert result["webhooks"][0]["matchConditions"] == [{"name": "c1", "expression": "false"}]
    assert result["webhooks"][0]["rules"] == [{"operations": ["UPDATE"]}]


def test_plain_kinds_merge_maps_and_replace_lists() -> None:
    config_map = {"metadata": {"name": "c", "finalizers": ["f"]}, "data": {"a": "1", "b": "2"}}
    result = smp(
        config_map, {"metadata": {"finalizers": ["g"]}, "data": {"a": None, "c": "3"}}, "ConfigMap"
    )
    assert result == {
        "metadata": {"name": "c", "finalizers": ["g", "f"]},
        "data": {"b": "2", "c": "3"},
    }
    lease = smp(
        {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
        {"spec": {"holderIdentity": "b"}},
        "Lease",
    )
    assert lease == {"spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}}


def test_upstream_order_preservation_cases() -> None:
    # strategicpatch's "preserve the order from the patch in a merging list" cases
    target = {"status": {"conditions": [{"type": "1"}, {"type": "2", "value": "b"}, {"type": "3"}]}}
    patch = {
        "status": {
            "conditions": [
                {"type": "3", "value": "c"},
                {"type": "1", "value": "a"},
                {"type": "2", "other": "x"},
            ]
        }
    }
    assert smp(target, patch, "Job")["status"]["conditions"] == [
        {"type": "3", "value": "c"},
        {"type": "1", "value": "a"},
        {"type": "2", "value": "b", "other": "x"},
    ]
    patch = {"status": {"conditions": [{"type": "3", "value": "c"}, {"type": "1", "value": "a"}]}}
    assert smp(target, patch, "Job")["status"]["conditions"] == [
        {"type": "2", "value": "b"},
        {"type": "3", "value": "c"},
        {"type": "1", "value": "a"},
    ]


def test_values_taken_from_the_patch_lose_nulls_and_directives() -> None:
    patch = {
        "spec": {
            "tolerations": [{"key": "k", "tolerationSeconds": None, "$patch": "delete"}],
            "containers": [{"name": "new", "image": None, "env": [{"name": "E", "value": None}]}],
            "nodeSelector": {"a": None, "b": "x"},
        }
    }
    spec = smp(POD, patch)["spec"]
    assert spec["tolerations"] == [{"key": "k"}]
    assert spec["containers"][0] == {"name": "new", "env": [{"name": "E"}]}
    assert spec["nodeSelector"] == {"b": "x"}


def test_a_value_of_another_type_replaces() -> None:
    assert smp(POD, {"spec": {"containers": {"oops": 1}}})["spec"]["containers"] == {"oops": 1}
    assert smp(POD, {"metadata": {"labels": "x"}})["metadata"]["labels"] == "x"


def test_null_and_empty_patches() -> None:
    assert smp(POD, None) == POD
    assert smp(POD, {}) == POD


@pytest.mark.parametrize(
    ("patch", "code", "reason", "message"),
    [
        (
            {"spec": {"containers": [{"image": "x"}]}},
            500,
            "",
            "map: map[image:x] does not contain declared merge key: name",
        ),
        (
            {"spec": {"containers": [{"name": "app", "$patch": "merge"}]}},
            500,
            "",
            "merging lists cannot yet be specified in the patch",
        ),
        (
            {"spec": {"containers": [{"name": "app", "$patch": "explode"}]}},
            500,
            "",
            "unknown patch type: explode in map: map[$patch:explode name:app]",
        ),
        (
            {"metadata": {"$patch": "merge"}},
            500,
            "",
            "unknown patch type: merge in map: map[$patch:merge]",
        ),
        (
            {"spec": {"containers": [{"$patch": "delete"}]}},
            500,
            "",
            "map: map[$patch:delete] does not contain declared merge key: name",
        ),
        (
            {"metadata": {"finalizers": [1]}},
            500,
            "",
            "list element types are not identical: [[a.example.com/x a.example.com/y] [1]]",
        ),
        (
            {"metadata": {"finalizers": [["x"]]}},
            500,
            "",
            "list element types are not identical: [[a.example.com/x a.example.com/y] [[x]]]",
        ),
        (
            {"spec": {"tolerations": [{"key": "a"}], "$deleteFromPrimitiveList/tolerations": [{}]}},
            500,
            "",
            "cannot merge lists without merge key for struct",
        ),
        (
            {"spec": {"$setElementOrder/containers": "app"}},
            500,
            "",
            "expected a []interface {}, but received a string",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList": ["x"]}},
            400,
            "BadRequest",
            "invalid patch format of primitive list",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveListX/finalizers": ["x"]}},
            400,
            "BadRequest",
            "invalid patch format of primitive list",
        ),
        (
            {"metadata": {"$setElementOrderX/finalizers": ["x"]}},
            400,
            "BadRequest",
            "invalid patch format of setElementOrder list",
        ),
        (
            ["not", "a", "map"],
            400,
            "BadRequest",
            "json: cannot unmarshal array into Go value of type map[string]interface {}",
        ),
    ],
)
def test_strategic_merge_errors(patch: Any, code: int, reason: str, message: str) -> None:
    error = smp_error(POD, patch)
    assert (error.code, error.reason, error.message) == (code, reason, message)


def test_a_list_of_lists_is_unprocessable() -> None:
    target = {"metadata": {"finalizers": [["a"]]}}
    error = smp_error(target, {"metadata": {"finalizers": [["b"]]}}, "Secret")
    assert error.status()["code"] == 422
    assert (error.reason, error.message) == ("Invalid", REJECTED)


@pytest.mark.parametrize("kind", ["Widget", "CronTab", "Ingress", ""])
def test_unknown_kinds_cannot_be_strategically_merged(kind: str) -> None:
    error = smp_error({"spec": {}}, {"spec": {"a": 1}}, kind)
    assert (error.code, error.reason) == (415, "UnsupportedMediaType")
    assert error.message == f"strategic merge patch is not supported for {kind}"


def test_merge_key_table() -> None:
    builtin = {
        "Pod",
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
        "StatefulSet",
        "Job",
        "CronJob",
        "Node",
        "Namespace",
        "Secret",
        "ConfigMap",
        "ServiceAccount",
        "Event",
        "Lease",
        "MutatingWebhookConfiguration",
        "Service",
        "PersistentVolumeClaim",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert set(MERGE_KEYS) == builtin
    pod = MERGE_KEYS["Pod"]
    assert pod["spec.containers"] == "name"
    assert pod["spec.ephemeralContainers.env"] == "name"
    assert pod["spec.initContainers.ports"] == "containerPort"
    assert pod["metadata.finalizers"] == PRIMITIVE_SET
    assert "spec.tolerations" not in pod
    assert "status.containerStatuses" not in pod
    assert MERGE_KEYS["Deployment"]["spec.template.spec.containers.volumeMounts"] == "mountPath"
    assert MERGE_KEYS["CronJob"]["spec.jobTemplate.spec.template.spec.volumes"] == "name"
    assert MERGE_KEYS["Service"]["spec.ports"] == "port"
    assert "rules" not in MERGE_KEYS["ClusterRole"]  # atomic in k8s.io/api
    for kind in builtin:
        assert MERGE_KEYS[kind]["metadata.ownerReferences"] == "uid"


# -- strategic merge properties ----------------------------------------------------------------

label_maps = st.dictionaries(
    st.sampled_from("abcde"), st.one_of(st.none(), st.text(max_size=3)), max_size=5
)
scalar_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-9, 9), st.text(max_size=3)),
    lambda inner: st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    max_leaves=12,
)


@given(
    st.dictionaries(st.sampled_from(["data", "spec", "x"]), scalar_trees, max_size=3),
    st.dictionaries(st.sampled_from(["data", "spec", "x"]), scalar_trees, max_size=3),
)
def test_without_lists_or_directives_it_is_a_merge_patch(target: Any, patch: Any) -> None:
    target = merge_patch({}, target)  # no nulls in a stored object
    assert strategic_merge_patch(target, patch, kind="ConfigMap") == merge_patch(target, patch)


containers_lists = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from("abcdef"), "image": st.text(max_size=3)}),
    max_size=5,
    unique_by=lambda c: c["name"],
)


@given(containers_lists, containers_lists)
def test_containers_end_up_as_the_union_by_name(live: Any, patch: Any) -> None:
    result = strategic_merge_patch(
        {"spec": {"containers": live}}, {"spec": {"containers": patch}}, kind="Pod"
    )
    merged = result["spec"]["containers"]
    expected = {c["name"]: c["image"] for c in live} | {c["name"]: c["image"] for c in patch}
    assert {c["name"]: c["image"] for c in merged} == expected
    assert len(merged) == len(expected)
    # the patch's elements keep the patch's order, the others the live order
    patched = [c["name"] for c in patch]
    assert [n for n in names(merged) if n in patched] == patched
    others = [c["name"] for c in live if c["name"] not in patched]
    assert [n for n in names(merged) if n not in patched] == others


@given(containers_lists, containers_lists)
def test_strategic_merge_is_idempotent_for_keyed_lists(live: Any, patch: Any) -> None:
    once = strategic_merge_patch(
        {"spec": {"containers": live}}, {"spec": {"containers": patch}}, kind="Pod"
    )
    twice = strategic_merge_patch(once, {"spec": {"containers": patch}}, kind="Pod")
    assert twice == once


@given(
    st.lists(st.sampled_from("abcdef"), unique=True),
    st.lists(st.sampled_from("abcdef")),
    st.lists(st.sampled_from("abcdef")),
)
def test_finalizer_patches_add_and_delete_as_sets(
    live: list[str], added: list[str], deleted: list[str]
) -> None:
    patch: dict[str, Any] = {"finalizers": added}
    merged = strategic_merge_patch(
        {"metadata": {"finalizers": live}}, {"metadata": patch}, kind="Pod"
    )["metadata"]["finalizers"]
    assert sorted(merged) == sorted(set(live) | set(added))
    removed = strategic_merge_patch(
        {"metadata": {"finalizers": live}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": deleted}},
        kind="Pod",
    )["metadata"]["finalizers"]
    assert removed == [f for f in live if f not in deleted]


def test_service_ports_merge_by_port_and_role_rules_replace() -> None:
    target = {"spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}}
    out = smp(target, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}, "Service")
    assert out["spec"]["ports"] == [
        {"name": "http", "port": 80}, {"name": "https", "port": 443, "targetPort": 8443}]
    role = {"rules": [{"verbs": ["get"]}, {"verbs": ["list"]}]}
    assert smp(role, {"rules": [{"verbs": ["watch"]}]}, "Role")["rules"] == [{"verbs": ["watch"]}]
