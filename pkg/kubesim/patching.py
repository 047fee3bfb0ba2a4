"""The three PATCH bodies kube-apiserver accepts, applied to plain JSON objects.

kubectl, client-go and controllers patch far more often than they update:
`kubectl apply`, `kubectl label` and the kubelet's status updates send strategic
merge patches, admission webhooks answer with JSON patches, and many clients
send merge patches. What a patch does to a list (merge by key, set union or
replace), which errors are 400, 422 or 500, and where RFCs and Kubernetes part
ways decide whether client code that works here works on a real cluster, so this
module follows k8s.io/apiserver's patch handler, evanphx/json-patch and
k8s.io/apimachinery/pkg/util/strategicpatch rather than the RFCs alone.

All functions are pure: inputs are never mutated and results share nothing
with them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Final

from kubesim import statuses
from kubesim.statuses import ApiError

__all__ = [
    "MAX_JSON_PATCH_OPERATIONS",
    "MERGE_KEYS",
    "PRIMITIVE_SET",
    "JSONPatchError",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]


def _clone(value: Any) -> Any:
    """A deep copy of a JSON value (much cheaper than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, but true is not 1 (unlike Python's ==)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_json_equal(v, b[k]) for k, v in a.items())
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and bool(a == b)


def _json_kind(value: Any) -> str:
    """The JSON type name encoding/json uses in its unmarshal errors."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


# -- RFC 7386 JSON merge patch ----------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return _clone(patch)
    return _merge_into(_clone(target) if isinstance(target, dict) else {}, patch)


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            existing = target.get(key)
            target[key] = _merge_into(existing if isinstance(existing, dict) else {}, value)
        else:
            target[key] = _clone(value)
    return target


# -- RFC 6902 JSON patch ----------------------------------------------------------------------

# k8s.io/apiserver/pkg/endpoints/handlers/patch.go, maxJSONPatchOperations
MAX_JSON_PATCH_OPERATIONS: Final = 10000

_REJECTED: Final = "the server rejected our request due to an error in our request"


class JSONPatchError(ApiError):
    """A JSON patch that decoded but could not be applied.

    kube-apiserver's jsonPatcher.applyJSPatch (k8s.io/apiserver/pkg/endpoints/
    handlers/patch.go) turns any error of jsonpatch.Patch.Apply into
    errors.NewGenericServerResponse(422, ...), which answers 422 Invalid with a
    fixed message and empty details and drops the library's text. That text is
    kept in `cause`: the mutating webhook dispatcher reports the same failure as
    a 500 "Internal error occurred: <cause>".
    """

    def __init__(self, cause: str) -> None:
        super().__init__(422, "Invalid", _REJECTED, details={})
        self.cause = cause


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 with kube-apiserver's status codes.

    A body that does not decode as a list of objects is a 400 (jsonpatch.DecodePatch);
    every operation that cannot be applied, including an unknown or missing `op`,
    a missing `path`, `from` or `value`, is a JSONPatchError (422), because
    evanphx/json-patch only finds those while applying. Wherever RFC 6902 and
    evanphx/json-patch v4 disagree, the stricter of the two is followed: negative
    array indices, a `replace` of a missing member and an `add` without `value`
    fail here.
    """
    if ops is None:
        # `null` decodes to an empty jsonpatch.Patch, which applies cleanly
        return _clone(target)
    if not isinstance(ops, list):
        raise statuses.bad_request(
            f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch"
        )
    for op in ops:
        if op is not None and not isinstance(op, dict):
            raise statuses.bad_request(
                f"json: cannot unmarshal {_json_kind(op)} into Go value of type jsonpatch.Operation"
            )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise ApiError(
            413,
            "RequestEntityTooLarge",
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(ops)}",
        )
    root = [_clone(target)]
    for op in ops:
        _apply_operation(root, op or {})
    return root[0]


def _pointer(op: Mapping[str, Any], kind: str, member: str) -> list[str]:
    if member not in op:
        raise JSONPatchError(f"{kind} operation failed to decode {member}: missing value")
    pointer = op[member]
    if not isinstance(pointer, str):
        raise JSONPatchError(
            f"{kind} operation failed to decode {member}: json: cannot unmarshal "
            f"{_json_kind(pointer)} into Go value of type string"
        )
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise JSONPatchError(f'{kind} operation does not apply: doc is missing path: "{pointer}"')
    tokens = pointer[1:].split("/")
    for token in tokens:
        for i, c in enumerate(token):
            if c == "~" and token[i + 1 : i + 2] not in ("0", "1"):
                raise JSONPatchError(f"{kind} operation: invalid JSON pointer: {pointer}")
    # RFC 6901: ~1 first, then ~0, so "~01" is "~1"
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _where(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _array_index(token: str, length: int, *, insert: bool) -> int | None:
    if insert and token == "-":
        return length
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        return None
    index = int(token)
    return index if index < length or (insert and index == length) else None


def _locate(root: Any, tokens: list[str]) -> tuple[bool, Any]:
    """The value at `tokens`, if there is one."""
    value = root
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                return False, None
            value = value[token]
        elif isinstance(value, list):
            index = _array_index(token, len(value), insert=False)
            if index is None:
                return False, None
            value = value[index]
        else:
            return False, None
    return True, value


def _value(op: Mapping[str, Any], kind: str) -> Any:
    if "value" not in op:
        raise JSONPatchError(f"{kind} operation, missing value field: missing value")
    return op["value"]


def _add(root: list[Any], tokens: list[str], value: Any, kind: str) -> None:
    if not tokens:
        # evanphx/json-patch cannot add at the document root
        raise JSONPatchError(f'{kind} operation does not apply: doc is missing path: ""')
    found, parent = _locate(root[0], tokens[:-1])
    where = _where(tokens)
    if found and isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif found and isinstance(parent, list):
        index = _array_index(tokens[-1], len(parent), insert=True)
        if index is None:
            raise JSONPatchError(
                f"Unable to access invalid index: {tokens[-1]}: invalid index referenced"
            )
        parent.insert(index, value)
    else:
        raise JSONPatchError(f'{kind} operation does not apply: doc is missing path: "{where}"')


def _remove(root: list[Any], tokens: list[str], kind: str) -> Any:
    where = _where(tokens)
    if not tokens:
        raise JSONPatchError(f'{kind} operation does not apply: doc is missing path: ""')
    found, parent = _locate(root[0], tokens[:-1])
    if found and isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise JSONPatchError(f"Unable to remove nonexistent key: {tokens[-1]}: missing value")
        return parent.pop(tokens[-1])
    if found and isinstance(parent, list):
        index = _array_index(tokens[-1], len(parent), insert=False)
        if index is None:
            raise JSONPatchError(
                f"Unable to access invalid index: {tokens[-1]}: invalid index referenced"
            )
        return parent.pop(index)
    raise JSONPatchError(f'{kind} operation does not apply: doc is missing path: "{where}"')


def _apply_operation(root: list[Any], op: Mapping[str, Any]) -> None:
    kind = op.get("op")
    if not isinstance(kind, str):
        kind = "unknown"
    if kind == "add":
        tokens = _pointer(op, kind, "path")
        _add(root, tokens, _clone(_value(op, kind)), kind)
    elif kind == "remove":
        _remove(root, _pointer(op, kind, "path"), kind)
    elif kind == "replace":
        tokens = _pointer(op, kind, "path")
        value = _clone(_value(op, kind))
        if not tokens:
            if not isinstance(value, dict | list):
                raise JSONPatchError("replace operation value must be object or array")
            root[0] = value
            return
        found, parent = _locate(root[0], tokens[:-1])
        last = tokens[-1]
        if found and isinstance(parent, dict) and last in parent:
            parent[last] = value
            return
        if found and isinstance(parent, list):
            index = _array_index(last, len(parent), insert=False)
            if index is not None:
                parent[index] = value
                return
        raise JSONPatchError(
            f"replace operation does not apply: doc is missing key: {_where(tokens)}: missing value"
        )
    elif kind in ("move", "copy"):
        source = _pointer(op, kind, "from")
        tokens = _pointer(op, kind, "path")
        found, value = _locate(root[0], source)
        if not found or not source:
            raise JSONPatchError(
                f"{kind} operation does not apply: doc is missing from path: {_where(source)}: "
                "missing value"
            )
        if kind == "copy":
            _add(root, tokens, _clone(value), kind)
            return
        if tokens == source:
            return
        if tokens[: len(source)] == source:
            raise JSONPatchError(
                f"move operation does not apply: cannot move {_where(source)} into its own child"
            )
        _add(root, tokens, _remove(root, source, kind), kind)
    elif kind == "test":
        tokens = _pointer(op, kind, "path")
        expected = _value(op, kind)
        found, value = _locate(root[0], tokens)
        if not found:
            raise JSONPatchError(
                f"test operation does not apply: is missing path: {_where(tokens)}: missing value"
            )
        if not _json_equal(value, expected):
            raise JSONPatchError(f"testing value {_where(tokens)} failed: test failed")
    else:
        raise JSONPatchError(f"Unexpected kind: {kind}")


# -- strategic merge patch --------------------------------------------------------------------

# The patch strategy of a list whose elements are scalars and which merges as a
# set (patchStrategy:"merge" with no patchMergeKey, e.g. metadata.finalizers).
PRIMITIVE_SET: Final = ""


def _under(prefix: str, table: Mapping[str, str]) -> dict[str, str]:
    return {f"{prefix}.{path}": key for path, key in table.items()}


# The patchStrategy:"merge" lists of the k8s.io/api types (patchMergeKey tags).
# Paths are JSON member names from the object root; list elements add nothing to
# a path. Any list not listed is atomic: a patch replaces it (e.g. tolerations,
# taints, containerStatuses, args, a ServiceAccount's imagePullSecrets).
_OBJECT_META: Final = {"ownerReferences": "uid", "finalizers": PRIMITIVE_SET}
_CONTAINER: Final = {
    "ports": "containerPort",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}
_POD_SPEC: Final = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    **_under("containers", _CONTAINER),
    **_under("initContainers", _CONTAINER),
    **_under("ephemeralContainers", _CONTAINER),
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "schedulingGates": "name",
    "resourceClaims": "name",
}
_POD_STATUS: Final = {
    "conditions": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resourceClaimStatuses": "name",
}
_POD_TEMPLATE: Final = {**_under("metadata", _OBJECT_META), **_under("spec", _POD_SPEC)}
_META: Final = _under("metadata", _OBJECT_META)
_WORKLOAD: Final = {
    **_META,
    **_under("spec.template", _POD_TEMPLATE),
    "status.conditions": "type",
}

MERGE_KEYS: Final[Mapping[str, Mapping[str, str]]] = {
    "Pod": {**_META, **_under("spec", _POD_SPEC), **_under("status", _POD_STATUS)},
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "Job": _WORKLOAD,
    "CronJob": {
        **_META,
        **_under("spec.jobTemplate.metadata", _OBJECT_META),
        **_under("spec.jobTemplate.spec.template", _POD_TEMPLATE),
    },
    "Node": {
        **_META,
        "spec.podCIDRs": PRIMITIVE_SET,
        "status.conditions": "type",
        "status.addresses": "type",
    },
    "Namespace": {**_META, "status.conditions": "type"},
    "Secret": _META,
    "ConfigMap": _META,
    "ServiceAccount": {**_META, "secrets": "name"},
    "Event": _META,
    "Lease": _META,
    "MutatingWebhookConfiguration": {
        **_META,
        "webhooks": "name",
        "webhooks.matchConditions": "name",
    },
    "Service": {**_META, "spec.ports": "port", "status.conditions": "type"},
    "PersistentVolumeClaim": {**_META, "status.conditions": "type"},
    # rules, subjects, metrics, ingress and egress are atomic lists in k8s.io/api
    "Role": _META,
    "ClusterRole": _META,
    "RoleBinding": _META,
    "ClusterRoleBinding": _META,
    "HorizontalPodAutoscaler": {**_META, "status.conditions": "type"},
    "PodDisruptionBudget": {**_META, "status.conditions": "type"},
    "NetworkPolicy": _META,
}

_SCHEMAS: Final[dict[str, dict[tuple[str, ...], str]]] = {
    kind: {tuple(path.split(".")): key for path, key in table.items()}
    for kind, table in MERGE_KEYS.items()
}

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ELEMENT_ORDER: Final = "$setElementOrder"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList"


def _bad_request(message: str) -> ApiError:
    # interpretStrategicMergePatchError: the mergepatch.ErrBad* errors are 400s
    return statuses.bad_request(message)


def _unprocessable() -> ApiError:
    # interpretStrategicMergePatchError: ErrNoListOfLists is a 422 through
    # NewGenericServerResponse, whose message is fixed
    return ApiError(422, "Invalid", _REJECTED, details={})


def _failure(message: str) -> ApiError:
    # Any other strategicpatch error reaches responsewriters.ErrorToAPIStatus as a
    # plain error: 500 with reason StatusReasonUnknown (""), the error as message.
    return ApiError(500, "", message)


def _go_type(value: Any) -> str:
    """The Go type encoding/json decodes a value into (kube decodes ints as int64)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "[]interface {}"


def _go_format(value: Any) -> str:
    """fmt's %v of a decoded JSON value, for the messages strategicpatch builds."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_format(v) for v in value) + "]"
    return str(value)


def _identity(value: Any) -> Hashable:
    """A key equal for two values exactly when Go's interface == holds."""
    tag = _go_type(value)
    try:
        hash(value)
    except TypeError:
        return (tag, id(value))
    return (tag, value)


def _bad_arg_type(expected: str, actual: Any) -> ApiError:
    return _failure(f"expected a {expected}, but received a {_go_type(actual)}")


def _no_merge_key(item: Mapping[str, Any], merge_key: str) -> ApiError:
    return _failure(f"map: {_go_format(item)} does not contain declared merge key: {merge_key}")


def _is_directive_key(key: str) -> bool:
    return (
        key in (_DIRECTIVE, _RETAIN_KEYS)
        or key.startswith(_SET_ELEMENT_ORDER)
        or key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
    )


def _scrub(value: Any) -> Any:
    """A patch value taken over verbatim, as the typed object kube decodes it into.

    strategicpatch copies some patch values into the result untouched (an atomic
    list, a map under `$patch: replace`, a new element of a merged list). kube
    then decodes the result into the Go type, which drops null members and the
    directive keys; kubesim keeps JSON, so it drops them here.
    """
    if isinstance(value, dict):
        return {
            k: _scrub(v) for k, v in value.items() if v is not None and not _is_directive_key(k)
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _without_directives(value: Any) -> tuple[Any, bool]:
    """strategicpatch.removeDirectives: maps carrying `$patch` disappear entirely."""
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        out: dict[str, Any] = {}
        for k, v in value.items():
            kept, keep = _without_directives(v)
            if keep:
                out[k] = kept
        return out, True
    if isinstance(value, list):
        return [kept for kept, keep in map(_without_directives, value) if keep], True
    return value, True


def _without_nulls(value: Any) -> Any:
    """strategicpatch.discardNullValuesFromPatch (on a copy)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _directive_target(key: str, prefix: str) -> str:
    head, slash, rest = key.partition("/")
    if not slash or head != prefix:
        if prefix == _DELETE_FROM_PRIMITIVE_LIST:
            raise _bad_request("invalid patch format of primitive list")
        raise _bad_request("invalid patch format of setElementOrder list")
    return rest


def strategic_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], *, kind: str
) -> dict[str, Any]:
    """strategicpatch.StrategicMergeMapPatch as kube-apiserver applies it to a built-in kind.

    Unknown kinds (custom resources) cannot be strategically merged: kube-apiserver
    does not even accept the content type for them (415).
    """
    schema = _SCHEMAS.get(kind)
    if schema is None:
        raise statuses.unsupported_media_type(f"strategic merge patch is not supported for {kind}")
    original: dict[str, Any] = _clone(target) if isinstance(target, dict) else {}
    if patch is None:
        # kube decodes the body into a map; `null` leaves it empty
        return original
    if not isinstance(patch, dict):
        raise statuses.bad_request(
            f"json: cannot unmarshal {_json_kind(patch)} into Go value of type "
            "map[string]interface {}"
        )
    return _StrategicMerge(schema).merge_map(original, _clone(patch), ())


class _StrategicMerge:
    """mergeMap and mergeSlice with MergeParallelList and IgnoreUnmatchedNulls, as the
    server runs them; both work in place on private copies."""

    def __init__(self, schema: Mapping[tuple[str, ...], str]) -> None:
        self._schema = schema

    def merge_map(
        self, original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]
    ) -> dict[str, Any]:
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "replace":
                del patch[_DIRECTIVE]
                return dict(_scrub(patch))
            if directive == "delete":
                return {}
            raise _failure(
                f"unknown patch type: {_go_format(directive)} in map: {_go_format(patch)}"
            )
        self._retain_keys(original, patch)
        self._ordered_lists(original, patch, path)
        for patch_key, value in list(patch.items()):
            delete_list = patch_key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
            key = (
                _directive_target(patch_key, _DELETE_FROM_PRIMITIVE_LIST)
                if delete_list
                else patch_key
            )
            if value is None:
                original.pop(key, None)
                continue
            if key not in original or _go_type(original[key]) != _go_type(value):
                if not delete_list:
                    taken, keep = _without_directives(_without_nulls(value))
                    if keep:
                        original[key] = _scrub(taken)
                    else:
                        original.pop(key, None)
                continue
            current = original[key]
            child = (*path, key)
            if isinstance(current, dict):
                original[key] = self.merge_map(current, value, child)
            elif isinstance(current, list):
                merge_key = self._schema.get(child)
                if merge_key is None and not delete_list:
                    original[key] = _scrub(value)
                else:
                    original[key] = self.merge_list(
                        current, value, child, merge_key or "", delete_list=delete_list
                    )
            else:
                original[key] = value
        return original

    @staticmethod
    def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
        if _RETAIN_KEYS not in patch:
            return
        retained = patch.pop(_RETAIN_KEYS)
        if not isinstance(retained, list):
            raise _bad_request("invalid patch format of retainKeys")
        keep = {k for k in retained if isinstance(k, str)}
        for key, value in patch.items():
            if (
                value is not None
                and not key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
                and not key.startswith(_SET_ELEMENT_ORDER)
                and key not in keep
            ):
                raise _bad_request("invalid patch format of retainKeys")
        for key in [k for k in original if k not in keep]:
            del original[key]

    def _ordered_lists(
        self, original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]
    ) -> None:
        """mergePatchIntoOriginal: lists with a `$setElementOrder/<field>` directive."""
        for directive in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
            order = patch.pop(directive)
            if not isinstance(order, list):
                raise _bad_arg_type("[]interface {}", order)
            key = _directive_target(directive, _SET_ELEMENT_ORDER)
            current, update = original.get(key), patch.get(key)
            has_current, has_update = key in original, key in patch
            if has_current and not isinstance(current, list):
                raise _bad_arg_type("[]interface {}", current)
            if has_update and not isinstance(update, list):
                raise _bad_arg_type("[]interface {}", update)
            current_list: list[Any] = current if isinstance(current, list) else []
            update_list: list[Any] = update if isinstance(update, list) else []
            merge_key = self._schema.get((*path, key))
            key_name = merge_key or ""
            _check_order(update_list, order, key_name)
            if has_current and has_update:
                if merge_key is None:
                    merged = _scrub(update_list)
                else:
                    merged = self.merge_list(
                        _clone(current_list),
                        update_list,
                        (*path, key),
                        key_name,
                        delete_list=False,
                    )
            elif has_current:
                merged = current_list
            elif has_update:
                merged = _scrub(_without_directives(update_list)[0])
            else:
                continue
            is_map = _element_kind(current_list, update_list) == "map"
            if key_name:
                in_order, server_only = _partition_maps(merged, order, key_name)
            else:
                in_order, server_only = _partition_scalars(merged, order)
            original[key] = _normalize_order(
                in_order, server_only, order, current_list, key_name, is_map=is_map
            )
            patch.pop(key, None)

    def merge_list(
        self,
        original: list[Any],
        patch: list[Any],
        path: tuple[str, ...],
        merge_key: str,
        *,
        delete_list: bool,
    ) -> list[Any]:
        """strategicpatch.mergeSlice."""
        if not original and not patch:
            return original
        is_map = _element_kind(original, patch) == "map"
        if not is_map:
            if delete_list:
                doomed = {_identity(v) for v in patch}
                return [v for v in original if _identity(v) not in doomed]
            merged = list({_identity(v): v for v in [*original, *patch]}.values())
            in_patch, server_only = _partition_scalars(merged, patch)
            return _normalize_order(in_patch, server_only, patch, original, "", is_map=False)
        if not merge_key:
            raise _failure("cannot merge lists without merge key for struct")
        original, patch = _list_directives(original, patch, merge_key)
        # new elements are appended to a copy: the live order stays the one before them
        merged = list(original)
        for item in patch:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            index = _find_by_key(merged, merge_key, item[merge_key])
            if index is None:
                merged.append(_scrub(item))
            else:
                merged[index] = self.merge_map(merged[index], item, path)
        in_patch, server_only = _partition_maps(merged, patch, merge_key)
        return _normalize_order(in_patch, server_only, patch, original, merge_key, is_map=True)


def _element_kind(*lists: list[Any]) -> str:
    """strategicpatch.sliceElementType: all elements share one Go type, lists excluded."""
    seen: str | None = None
    for values in lists:
        for value in values:
            tag = _go_type(value)
            if seen is None:
                if isinstance(value, list):
                    raise _unprocessable()
                seen = tag
            elif tag != seen:
                raise _failure(
                    "list element types are not identical: " + _go_format([list(v) for v in lists])
                )
    if seen is None:
        raise _failure("no elements in any of the given slices")
    return "map" if seen == _go_type({}) else seen


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int | None:
    wanted = _identity(value)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _failure(f"value for key {index} is not a map")
        if merge_key in item and _identity(item[merge_key]) == wanted:
            return index
    return None


def _list_directives(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: `$patch: delete` and `$patch: replace` elements."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            while (index := _find_by_key(original, merge_key, item[merge_key])) is not None:
                del original[index]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise _failure("merging lists cannot yet be specified in the patch")
        else:
            raise _failure(
                f"unknown patch type: {_go_format(directive)} in map: {_go_format(item)}"
            )
    if replace:
        return [_scrub(item) for item in plain], []
    return original, plain


def _check_order(patch: list[Any], order: list[Any], merge_key: str) -> None:
    """validatePatchWithSetOrderList: the patch list is a subsequence of the order list."""
    if not order or not patch:
        return
    if merge_key:
        for item in patch:
            if not isinstance(item, dict):
                raise _bad_arg_type("map[string]interface {}", item)
        patch = [item for item in patch if item.get(_DIRECTIVE) != "delete"]
    p = o = 0
    while p < len(patch) and o < len(order):
        item = patch[p]
        if isinstance(item, dict) and _DIRECTIVE in item:
            p += 1
            continue
        if merge_key:
            listed = order[o]
            if not isinstance(listed, dict):
                raise _bad_arg_type("map[string]interface {}", listed)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            if merge_key not in listed:
                raise _no_merge_key(listed, merge_key)
            same = _identity(item[merge_key]) == _identity(listed[merge_key])
        else:
            same = _identity(item) == _identity(order[o])
        if same:
            p += 1
        o += 1
    if p < len(patch) and o >= len(order):
        raise _failure(
            f"The order in patch list:\n{_go_format(patch)}\n doesn't match "
            f"{_SET_ELEMENT_ORDER} list:\n{_go_format(order)}\n"
        )


def _partition_scalars(items: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    present = {_identity(v) for v in by}
    inside = [v for v in items if _identity(v) in present]
    outside = [v for v in items if _identity(v) not in present]
    return inside, outside


def _partition_maps(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    inside: list[Any] = []
    outside: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        target = inside if _find_by_key(by, merge_key, item[merge_key]) is not None else outside
        target.append(item)
    return inside, outside


def _positions(order: list[Any], merge_key: str, *, is_map: bool) -> dict[Hashable, int]:
    positions: dict[Hashable, int] = {}
    for index, item in enumerate(order):
        positions.setdefault(_identity(_merge_value(item, merge_key, is_map=is_map)), index)
    return positions


def _merge_value(item: Any, merge_key: str, *, is_map: bool) -> Any:
    if not is_map:
        return item
    return item.get(merge_key) if isinstance(item, dict) else None


def _normalize_order(
    patch_items: list[Any],
    server_items: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    *,
    is_map: bool,
) -> list[Any]:
    """normalizeElementOrder and mergeSortedSlice.

    Patch items keep the patch's order and server-only items the live object's; the
    two are interleaved by the live order where both are known. An item new to the
    list sorts before the server-only items, so a patch that adds an element
    without `$setElementOrder` puts it first.
    """
    if is_map:
        for items, order in ((patch_items, patch_order), (server_items, server_order)):
            for item in (*items, *order):
                if not isinstance(item, dict):
                    raise _bad_arg_type("map[string]interface {}", item)
                if merge_key not in item:
                    raise _no_merge_key(item, merge_key)
    patch_positions = _positions(patch_order, merge_key, is_map=is_map)
    server_positions = _positions(server_order, merge_key, is_map=is_map)

    def rank(positions: dict[Hashable, int]) -> Any:
        def key(item: Any) -> tuple[bool, int]:
            if is_map and item.get(_DIRECTIVE) == "delete":
                return (True, 0)
            at = positions.get(_identity(_merge_value(item, merge_key, is_map=is_map)))
            return (False, len(positions) if at is None else at)

        return key

    right = sorted(patch_items, key=rank(patch_positions))
    left = sorted(server_items, key=rank(server_positions))
    merged: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li = server_positions.get(_identity(_merge_value(left[i], merge_key, is_map=is_map)))
        ri = server_positions.get(_identity(_merge_value(right[j], merge_key, is_map=is_map)))
        if li is not None and ri is not None and li < ri:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged
