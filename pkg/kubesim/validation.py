"""Validation and defaulting of what clients write, as kube-apiserver does them.

A real API server rejects an invalid object with 422 Invalid and a list of
causes whose reasons, field paths and wording clients and operators match on
(`metadata.name: Invalid value: "Foo": a lowercase RFC 1123 subdomain ...`),
and it fills in defaults clients then read back (a Pod's dnsPolicy, a
Deployment's strategy). Code proven against kubesim must behave the same
against a cluster, so this module reproduces both: object metadata, Pods,
the apps and batch workloads, Events (of both APIs), mutating webhook
configurations, CustomResourceDefinitions and custom resources (against
their schema).

It is pure: no I/O, no clock, no randomness. The apiserver calls
apply_defaults, then validate_create or validate_update (and, for custom
resources, prune first and validate_custom after). Pods and workloads live
in kubesim.pods and kubesim.workloads, Events in kubesim.events, schemas in
kubesim.schemas_openapi, field errors and name rules in kubesim.fielderrors.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kubesim import events, pods, schemas_openapi, workloads
from kubesim.fielderrors import (
    IS_NEGATIVE,
    FieldErrors,
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    fully_qualified_name,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_str,
    go_quote,
    mask_trailing_dash,
    qualified_name,
    regex_error,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from kubesim.resources import Resource

__all__ = [
    "apply_defaults",
    "prune",
    "validate_create",
    "validate_custom",
    "validate_update",
]

Obj = dict[str, Any]
NameCheck = Callable[[str], tuple[str, ...] | list[str]]

_STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})
# kinds whose metadata goes through pkg/apis/core/validation.ValidateObjectMeta, which also
# requires finalizer names without a '/' to be one of the standard ones
_KUBE_FINALIZER_GROUPS = frozenset({"", "apps", "batch", "coordination.k8s.io"})
MAX_SECRET_SIZE = 1024 * 1024


# --- public API ----------------------------------------------------------------------------

def validate_create(resource: Resource, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid (or 400 for a value of the wrong JSON type) if obj may not be created.

    Events come in their stored (core/v1) form whichever API `resource` is; it decides which
    of kube's rules apply."""
    errs = FieldErrors()
    _validate(errs, resource, obj)
    if errs:
        errs.raise_for(_reported_as(resource), _name_of(obj))


def validate_update(resource: Resource, old: dict[str, Any], new: dict[str, Any], *,
                    subresource: str | None = None) -> None:
    """validate_create's checks on new, plus what an update may not change."""
    errs = FieldErrors()
    _validate_meta_update(errs, _meta_of(old), _meta_of(new))
    kind = _kind_key(resource)
    if kind in _EVENT_KINDS:
        _validate_event_update(errs, resource, old, new)
        if errs:
            errs.raise_for(_reported_as(resource), _name_of(new))
        return
    _validate(errs, resource, new)
    if kind == ("", "Pod") and subresource == "ephemeralcontainers":
        # the subresource's strategy validates with ValidatePodEphemeralContainersUpdate,
        # not ValidatePodUpdate (which forbids any change to ephemeralContainers)
        pods.validate_ephemeral_containers_update(errs, old, new)
    elif kind == ("", "Pod"):
        pods.validate_pod_update(errs, old, new)
    elif kind[0] == "apps":
        workloads.validate_apps_update(errs, old, new, kind=resource.kind)
    elif kind == ("batch", "Job"):
        workloads.validate_job_update(errs, old, new)
    elif kind == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        _validate_crd_update(errs, old, new)
    if errs:
        errs.raise_for(resource, _name_of(new))


def apply_defaults(resource: Resource, obj: dict[str, Any]) -> None:
    """Fill in, in place, what kube's defaulters (and a few create strategies) fill in."""
    if resource.is_custom:
        schemas_openapi.apply_schema_defaults(resource.schema, obj)
        return
    defaulter = _DEFAULTERS.get(_kind_key(resource))
    if defaulter is not None:
        defaulter(obj)


def validate_custom(resource: Resource, obj: dict[str, Any]) -> None:
    """Validate a custom resource: its metadata, and the rest against resource.schema."""
    errs = FieldErrors()
    _validate_custom(errs, resource, obj)
    if errs:
        errs.raise_for(resource, _name_of(obj))


def prune(schema: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """Drop, in place, the fields of a custom resource its structural schema does not
    specify (kube does so silently), keeping apiVersion, kind and metadata; returns obj."""
    return schemas_openapi.prune(schema, obj)


# --- dispatch ------------------------------------------------------------------------------

def _kind_key(resource: Resource) -> tuple[str, str]:
    return (resource.group, resource.kind)


def _meta_of(obj: Any) -> Obj:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def _name_of(obj: Any) -> str:
    name = _meta_of(obj).get("name")
    return name if isinstance(name, str) else ""


def _reported_as(resource: Resource) -> Resource:
    """The group kube names in the errors of `resource`. A resource that cohabits with
    another validates the other's internal type, and reports that (Event, not
    Event.events.k8s.io)."""
    if not resource.cohabits_with:
        return resource
    group = resource.cohabits_with.partition(".")[2]
    return dataclasses.replace(resource, group=group)


def _validate(errs: FieldErrors, resource: Resource, obj: Any) -> None:
    if not isinstance(obj, dict):
        errs.decode("", obj, resource.kind)
        return
    if resource.is_custom:
        _validate_custom(errs, resource, obj)
        return
    key = _kind_key(resource)
    if key in _EVENT_KINDS:
        _validate_event_create(errs, resource, obj)
        return
    name_check: NameCheck = dns1123_subdomain
    if key == ("", "Namespace"):
        name_check = dns1123_label
    elif key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        name_check = _crd_name_check(obj)
    validate_object_meta(errs, resource, obj, name_check=name_check,
                         kube_finalizers=resource.group in _KUBE_FINALIZER_GROUPS)
    validator = _VALIDATORS.get(key)
    if validator is not None:
        validator(errs, obj)


def _validate_custom(errs: FieldErrors, resource: Resource, obj: Obj) -> None:
    validate_object_meta(errs, resource, obj, name_check=dns1123_subdomain,
                         kube_finalizers=False)
    schemas_openapi.validate_custom_resource(errs, resource.schema, obj)


# --- object metadata (k8s.io/apimachinery/pkg/api/validation/objectmeta.go) ---------------

def validate_object_meta(
    errs: FieldErrors, resource: Resource, obj: Obj, *, name_check: NameCheck,
    kube_finalizers: bool,
) -> None:
    meta = get_dict(errs, obj, "metadata", path="")
    generate_name = get_str(errs, meta, "generateName", path="metadata")
    if generate_name:
        for msg in name_check(mask_trailing_dash(generate_name)):
            errs.invalid("metadata.generateName", generate_name, msg)
    name = get_str(errs, meta, "name", path="metadata")
    if name:
        for msg in name_check(name):
            errs.invalid("metadata.name", name, msg)
    elif not generate_name:
        # with a generateName the apiserver generates the name before validating
        errs.required("metadata.name", "name or generateName is required")
    namespace = get_str(errs, meta, "namespace", path="metadata")
    if resource.namespaced:
        if not namespace:
            errs.required("metadata.namespace")
        else:
            for msg in dns1123_label(namespace):
                errs.invalid("metadata.namespace", namespace, msg)
    elif namespace:
        errs.forbidden("metadata.namespace", "not allowed on this type")
    if "generation" in meta:
        generation = get_int(errs, meta, "generation", path="metadata")
        if generation is not None and generation < 0:
            errs.invalid("metadata.generation", generation, IS_NEGATIVE)
    validate_labels(errs, meta.get("labels"), "metadata.labels")
    validate_annotations(errs, meta.get("annotations"), "metadata.annotations")
    if meta.get("ownerReferences"):
        _validate_owner_references(errs, get_list(errs, meta, "ownerReferences", path="metadata"))
    if meta.get("finalizers"):
        _validate_finalizers(errs, get_list(errs, meta, "finalizers", path="metadata"),
                             kube_finalizers=kube_finalizers)


def _validate_owner_references(errs: FieldErrors, refs: list[Any]) -> None:
    path = "metadata.ownerReferences"  # kube reports these without an index
    controller = ""
    for ref in refs:
        if not isinstance(ref, dict):
            errs.decode(path, ref, "v1.OwnerReference")
            continue
        api_version = get_str(errs, ref, "apiVersion", path=path)
        kind = get_str(errs, ref, "kind", path=path)
        parts = api_version.split("/")
        group, version = ("", parts[0]) if len(parts) == 1 else (
            (parts[0], parts[1]) if len(parts) == 2 else ("", ""))
        if not version:
            errs.invalid(f"{path}.apiVersion", api_version, "version must not be empty")
        if not kind:
            errs.invalid(f"{path}.kind", kind, "must not be empty")
        for key in ("name", "uid"):
            value = get_str(errs, ref, key, path=path)
            if not value:
                errs.invalid(f"{path}.{key}", value, "must not be empty")
        if group == "" and version == "v1" and kind == "Event":
            errs.invalid(path, ref, "/v1, Kind=Event is disallowed from being an owner")
        if get_bool(errs, ref, "controller", path=path):
            current = f"{kind}/{ref.get('name', '')}"
            if controller:
                errs.invalid(path, refs, f'Only one reference can have Controller set to true. '
                                         f'Found "true" in references for {controller} and '
                                         f"{current}")
            else:
                controller = current


def _validate_finalizers(errs: FieldErrors, finalizers: list[Any], *,
                         kube_finalizers: bool) -> None:
    path = "metadata.finalizers"
    names = []
    for finalizer in finalizers:
        if type(finalizer) is not str:
            errs.decode(path, finalizer, "string")
            continue
        names.append(finalizer)
        for msg in qualified_name(finalizer):
            errs.invalid(path, finalizer, msg)
    if "orphan" in names and "foregroundDeletion" in names:
        errs.invalid(path, names,
                     "finalizer orphan and foregroundDeletion cannot be both set")
    if kube_finalizers:
        for i, finalizer in enumerate(names):
            for msg in qualified_name(finalizer):
                errs.invalid(f"{path}[{i}]", finalizer, msg)
            if "/" not in finalizer and finalizer not in _STANDARD_FINALIZERS:
                errs.invalid(f"{path}[{i}]", finalizer,
                             "name is neither a standard finalizer name nor is it fully "
                             "qualified")


def _go_strings(values: list[str]) -> str:
    return "[]string{" + ", ".join(go_quote(v) for v in values) + "}"


def _validate_meta_update(errs: FieldErrors, old: Obj, new: Obj) -> None:
    if old.get("deletionTimestamp"):
        before = set(old.get("finalizers") or ())
        added = sorted({f for f in new.get("finalizers") or () if isinstance(f, str)} - before)
        if added:
            errs.forbidden("metadata.finalizers",
                           "no new finalizers can be added if the object is being deleted, "
                           f"found new finalizers {_go_strings(added)}")
    old_generation, new_generation = old.get("generation"), new.get("generation")
    if isinstance(old_generation, int) and isinstance(new_generation, int) and (
            new_generation < old_generation):
        errs.invalid("metadata.generation", new_generation, "must not be decremented")
    # kube-apiserver fills an absent name, namespace, uid or creationTimestamp from the stored
    # object before validating, so only a different value is a change
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        value = new.get(key)
        if value and value != old.get(key):
            errs.immutable(f"metadata.{key}", value)


# --- Events (pkg/registry/core/event and pkg/apis/core/validation/events.go) --------------

_EVENT_KINDS = frozenset({("", "Event"), ("events.k8s.io", "Event")})


def _strict_events(resource: Resource) -> bool:
    # kube's strict rules apply to requests through events.k8s.io/v1 (and newer)
    return resource.group == "events.k8s.io"


def _validate_event_create(errs: FieldErrors, resource: Resource, obj: Obj) -> None:
    def strict_meta() -> None:
        validate_object_meta(errs, resource, obj, name_check=dns1123_subdomain,
                             kube_finalizers=True)

    before = len(errs.causes)
    events.validate_create(errs, obj, strict=_strict_events(resource), validate_meta=strict_meta)
    # The event strategy leaves metadata alone (but for the strict rules); the generic
    # registry then checks it with path-segment names, if nothing failed before.
    if len(errs.causes) == before and errs.decode_error is None:
        validate_object_meta(errs, resource, obj, name_check=events.path_segment_name,
                             kube_finalizers=False)


def _validate_event_update(errs: FieldErrors, resource: Resource, old: Obj, new: Obj) -> None:
    # the generic registry checks metadata on every update, before the strategy
    validate_object_meta(errs, resource, new, name_check=events.path_segment_name,
                         kube_finalizers=False)
    events.validate_update(errs, old, new, strict=_strict_events(resource))


# --- core/v1 kinds other than Pod ---------------------------------------------------------

def _default_namespace(obj: Obj) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels["kubernetes.io/metadata.name"] = meta["name"]
    status = obj.get("status")
    if status is None:
        status = obj["status"] = {}
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Active"


def _default_secret(obj: Obj) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    # the v1 conversion folds the write-only stringData into data
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for key, value in string_data.items():
            if isinstance(value, str):
                data[key] = base64.b64encode(value.encode()).decode()
    data = obj.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            data[key] = canonical_bytes(value)


_CONFIG_KEY_MSG = regex_error("a valid config key must consist of alphanumeric characters, "
                              "'-', '_' or '.'", "[-._a-zA-Z0-9]+", "key.name", "KEY_NAME",
                              "key-name")


def _config_key_errors(key: str) -> list[str]:
    errs = []
    if len(key) > 253:
        errs.append("must be no more than 253 characters")
    if not key or any(not (c.isascii() and (c.isalnum() or c in "-._")) for c in key):
        errs.append(_CONFIG_KEY_MSG)
    if key == ".":
        errs.append("must not be '.'")
    elif key == "..":
        errs.append("must not be '..'")
    elif key.startswith(".."):
        errs.append("must not start with '..'")
    return errs


_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = frozenset(b"\r\n")


def go_base64_error(text: str) -> int | None:
    """Where Go's base64.StdEncoding refuses `text`, as the byte offset its
    CorruptInputError carries; None when Go decodes it.

    Go's JSON decoder reads a []byte field (Secret data, a webhook's caBundle) with
    it, and kube-apiserver answers 400 "illegal base64 data at input byte N". Unlike
    Python's strict decoder, Go skips CR and LF anywhere, wants the padding, and
    stops at the first bad byte, which sets N.
    """
    src = text.encode()
    si = 0
    while si < len(src):
        j = 0  # sextets of this quantum so far
        while j < 4:
            if si == len(src):
                return None if j == 0 else si - j  # a quantum cut short: padding missing
            c = src[si]
            si += 1
            if c in _BASE64:
                j += 1
                continue
            if c in _NEWLINES:
                continue
            if c != ord("=") or j < 2:
                return si - 1  # not base64, or padding too early
            if j == 2:  # "==" expected: the second "=" may follow newlines
                while si < len(src) and src[si] in _NEWLINES:
                    si += 1
                if si == len(src):
                    return len(src)
                if src[si] != ord("="):
                    return si - 1
                si += 1
            while si < len(src) and src[si] in _NEWLINES:
                si += 1
            return si if si < len(src) else None  # anything after the padding is garbage
    return None


def canonical_bytes(value: Any) -> Any:
    """A []byte field as kube serves it back: the decoded bytes in standard base64 (no
    newlines, canonical padding bits). Anything Go would not decode is left for
    validation to refuse."""
    if type(value) is not str or go_base64_error(value) is not None:
        return value
    return base64.b64encode(base64.b64decode(value.replace("\r", "").replace("\n", ""))).decode()


def _decode_bytes(errs: FieldErrors, value: Any, path: str) -> bytes | None:
    """A []byte field's bytes, or None after recording the error kube would decode it with."""
    if type(value) is not str:
        errs.decode(path, value, "[]byte")
        return None
    offset = go_base64_error(value)
    if offset is not None:
        if errs.decode_error is None:
            errs.decode_error = f"illegal base64 data at input byte {offset}"
        return None
    return base64.b64decode(value.replace("\r", "").replace("\n", ""))


def _validate_secret(errs: FieldErrors, obj: Obj) -> None:
    data = get_dict(errs, obj, "data", path="")
    total = 0
    for key, value in data.items():
        for msg in _config_key_errors(key):
            errs.invalid(f"data[{key}]", key, msg)
        decoded = _decode_bytes(errs, value, "data")
        if decoded is not None:
            total += len(decoded)
    if total > MAX_SECRET_SIZE:
        errs.too_long("data", MAX_SECRET_SIZE)
    kind = obj.get("type")
    if kind == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                errs.required(f"data[{key}]")
    elif kind == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" not in data:
        errs.required("data[.dockerconfigjson]")
    elif kind == "kubernetes.io/dockercfg" and ".dockercfg" not in data:
        errs.required("data[.dockercfg]")
    elif kind == "kubernetes.io/service-account-token":
        annotations = _meta_of(obj).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.required("metadata.annotations[kubernetes.io/service-account.name]")


def _validate_configmap(errs: FieldErrors, obj: Obj) -> None:
    data = get_dict(errs, obj, "data", path="")
    binary = get_dict(errs, obj, "binaryData", path="")
    total = 0
    for key, value in data.items():
        for msg in _config_key_errors(key):
            errs.invalid(f"data[{key}]", key, msg)
        if key in binary:
            errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
        total += len(value.encode()) if isinstance(value, str) else 0
    for key, value in binary.items():
        for msg in _config_key_errors(key):
            errs.invalid(f"binaryData[{key}]", key, msg)
        total += len(value) * 3 // 4 if isinstance(value, str) else 0
    if total > MAX_SECRET_SIZE:
        # kube reports this at the root path, which prints as "[]"
        errs.too_long("[]", MAX_SECRET_SIZE)


def _validate_lease(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    duration = get_int(errs, spec, "leaseDurationSeconds", path="spec")
    if duration is not None and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    transitions = get_int(errs, spec, "leaseTransitions", path="spec")
    if transitions is not None and transitions < 0:
        errs.invalid("spec.leaseTransitions", transitions, IS_NEGATIVE)


# --- admissionregistration.k8s.io/v1 -------------------------------------------------------

_OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
_FORM = "; desired format: https://host[/path]"


def _default_webhook_configuration(obj: Obj) -> None:
    for hook in obj.get("webhooks") or ():
        if not isinstance(hook, dict):
            continue
        for key, value in (("failurePolicy", "Fail"), ("matchPolicy", "Equivalent"),
                           ("timeoutSeconds", 10), ("reinvocationPolicy", "Never")):
            if hook.get(key) is None:
                hook[key] = value
        for key in ("namespaceSelector", "objectSelector"):
            if hook.get(key) is None:
                hook[key] = {}
        for rule in hook.get("rules") or ():
            if isinstance(rule, dict) and rule.get("scope") is None:
                rule["scope"] = "*"
        config = hook.get("clientConfig")
        if isinstance(config, dict) and "caBundle" in config:
            config["caBundle"] = canonical_bytes(config["caBundle"])
        service = (config or {}).get("service")
        if isinstance(service, dict) and service.get("port") is None:
            service["port"] = 443


def _validate_webhook_configuration(errs: FieldErrors, obj: Obj) -> None:
    names: set[str] = set()
    for i, hook in enumerate(get_list(errs, obj, "webhooks", path="")):
        path = f"webhooks[{i}]"
        if not isinstance(hook, dict):
            errs.decode(path, hook, "v1.MutatingWebhook")
            continue
        name = _validate_webhook(errs, hook, path)
        _validate_review_versions(errs, hook.get("admissionReviewVersions"),
                                  f"{path}.admissionReviewVersions")
        if name:
            if name in names:
                errs.duplicate(f"{path}.name", name)
            names.add(name)


def _not_in(
    errs: FieldErrors, hook: Obj, key: str, *, path: str, allowed: tuple[str, ...]
) -> None:
    value = hook.get(key)
    if value is not None and value not in allowed:
        errs.not_supported(f"{path}.{key}", value, allowed)


def _validate_webhook(errs: FieldErrors, hook: Obj, path: str) -> str:
    """validateMutatingWebhook; returns the webhook's name."""
    name = get_str(errs, hook, "name", path=path)
    fully_qualified_name(errs, f"{path}.name", name)
    for i, rule in enumerate(get_list(errs, hook, "rules", path=path)):
        if isinstance(rule, dict):
            _validate_rule(errs, rule, f"{path}.rules[{i}]")
    _not_in(errs, hook, "failurePolicy", path=path, allowed=("Fail", "Ignore"))
    _not_in(errs, hook, "matchPolicy", path=path, allowed=("Equivalent", "Exact"))
    side_effects = hook.get("sideEffects")
    if side_effects is None:
        errs.required(f"{path}.sideEffects", "must specify one of None, NoneOnDryRun")
    else:
        _not_in(errs, hook, "sideEffects", path=path, allowed=("None", "NoneOnDryRun"))
    timeout = get_int(errs, hook, "timeoutSeconds", path=path)
    if timeout is not None and not 1 <= timeout <= 30:
        errs.invalid(f"{path}.timeoutSeconds", timeout,
                     "the timeout value must be between 1 and 30 seconds")
    for key in ("namespaceSelector", "objectSelector"):
        validate_label_selector(errs, hook.get(key), f"{path}.{key}")
    _not_in(errs, hook, "reinvocationPolicy", path=path, allowed=("IfNeeded", "Never"))
    config = get_dict(errs, hook, "clientConfig", path=path)
    if config.get("caBundle") is not None:
        _decode_bytes(errs, config["caBundle"], f"{path}.clientConfig.caBundle")
    url, service = config.get("url"), config.get("service")
    if (url is None) == (service is None):
        errs.required(f"{path}.clientConfig", "exactly one of url or service is required")
    elif isinstance(url, str):
        _validate_webhook_url(errs, url, f"{path}.clientConfig.url")
    elif isinstance(service, dict):
        _validate_webhook_service(errs, service, f"{path}.clientConfig.service")
    conditions = get_list(errs, hook, "matchConditions", path=path)
    if len(conditions) > 64:
        errs.too_many(f"{path}.matchConditions", len(conditions), 64)
    seen: set[str] = set()
    for i, condition in enumerate(conditions):
        p = f"{path}.matchConditions[{i}]"
        if not isinstance(condition, dict):
            errs.decode(p, condition, "v1.MatchCondition")
            continue
        # the expression is not compiled here; kubesim's admission evaluates it
        if not get_str(errs, condition, "expression", path=p).strip():
            errs.required(f"{p}.expression")
        condition_name = get_str(errs, condition, "name", path=p)
        if not condition_name:
            errs.required(f"{p}.name")
        else:
            for msg in qualified_name(condition_name):
                errs.invalid(f"{p}.name", condition_name, msg)
            if condition_name in seen:
                errs.duplicate(f"{p}.name", condition_name)
            seen.add(condition_name)
    return name


def _validate_rule(errs: FieldErrors, rule: Obj, path: str) -> None:
    operations = get_list(errs, rule, "operations", path=path)
    if not operations:
        errs.required(f"{path}.operations")
    if len(operations) > 1 and "*" in operations:
        errs.invalid(f"{path}.operations", operations,
                     "if '*' is present, must not specify other operations")
    for i, operation in enumerate(operations):
        if operation not in _OPERATIONS:
            errs.not_supported(f"{path}.operations[{i}]", operation, _OPERATIONS)
    for key, noun in (("apiGroups", "API groups"), ("apiVersions", "API versions")):
        values = get_list(errs, rule, key, path=path)
        if not values:
            errs.required(f"{path}.{key}")
        if len(values) > 1 and "*" in values:
            errs.invalid(f"{path}.{key}", values,
                         f"if '*' is present, must not specify other {noun}")
    for i, version in enumerate(rule.get("apiVersions") or ()):
        if version == "":
            errs.required(f"{path}.apiVersions[{i}]")
    resources = get_list(errs, rule, "resources", path=path)
    if not resources:
        errs.required(f"{path}.resources")
    for i, resource in enumerate(resources):
        if resource == "":
            errs.required(f"{path}.resources[{i}]")
    if len(resources) > 1 and "*/*" in resources:
        errs.invalid(f"{path}.resources", resources,
                     "if '*/*' is present, must not specify other resources")
    if "*" in resources and any(r != "*" and "/" not in r for r in resources if r):
        errs.invalid(f"{path}.resources", resources,
                     "if '*' is present, must not specify other resources without subresources")
    _not_in(errs, rule, "scope", path=path, allowed=("*", "Cluster", "Namespaced"))


def _validate_review_versions(errs: FieldErrors, versions: Any, path: str) -> None:
    if not versions:
        errs.required(path, "must specify one of v1, v1beta1")
        return
    if not isinstance(versions, list):
        errs.decode(path, versions, "[]string")
        return
    seen: set[str] = set()
    for i, version in enumerate(versions):
        if version in seen:
            errs.invalid(f"{path}[{i}]", version, "duplicate version")
            continue
        seen.add(version)
        for msg in dns1035_label(version if isinstance(version, str) else str(version)):
            errs.invalid(f"{path}[{i}]", version, msg)
    if not seen & {"v1", "v1beta1"}:
        errs.invalid(path, versions, "must include at least one of v1, v1beta1")


def _validate_webhook_url(errs: FieldErrors, url: str, path: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        errs.required(path, f"url must be a valid URL: {exc}{_FORM}")
        return
    if parts.scheme != "https":
        errs.invalid(path, parts.scheme, "'https' is the only allowed URL scheme" + _FORM)
    if not host and not parts.netloc.rpartition("@")[2]:
        errs.invalid(path, host, "host must be specified" + _FORM)
    if "@" in parts.netloc:
        errs.invalid(path, parts.netloc.rpartition("@")[0],
                     "user information is not permitted in the URL")
    if parts.fragment:
        errs.invalid(path, parts.fragment, "fragments are not permitted in the URL")
    if parts.query:
        errs.invalid(path, parts.query, "query parameters are not permitted in the URL")


def _validate_webhook_service(errs: FieldErrors, service: Obj, path: str) -> None:
    name = get_str(errs, service, "name", path=path)
    namespace = get_str(errs, service, "namespace", path=path)
    # kube passes name and namespace to its check in swapped order, so a missing namespace
    # is reported at .name and a missing name at .namespace
    if not namespace:
        errs.required(f"{path}.name")
    if not name:
        errs.required(f"{path}.namespace")
    port = get_int(errs, service, "port", path=path)
    if port is not None and not 1 <= port <= 65535:
        errs.invalid(f"{path}.port", port,
                     "port is not valid: must be between 1 and 65535, inclusive")
    url_path = service.get("path")
    if not isinstance(url_path, str) or url_path in ("", "/"):
        return
    if url_path == "//":
        errs.invalid(f"{path}.path", url_path, "segment[0] may not be empty")
        return
    if not url_path.startswith("/"):
        errs.invalid(f"{path}.path", url_path, "must start with a '/'")
    steps = url_path[1:]
    steps = steps[:-1] if steps.endswith("/") else steps
    for i, step in enumerate(steps.split("/")):
        if not step:
            errs.invalid(f"{path}.path", url_path, f"segment[{i}] may not be empty")
            continue
        for msg in dns1123_subdomain(step):
            errs.invalid(f"{path}.path", url_path, f"segment[{i}]: {msg}")


# --- apiextensions.k8s.io/v1 ---------------------------------------------------------------

def _default_crd(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        if not names.get("singular"):
            names["singular"] = names["kind"].lower()
        if not names.get("listKind") and names["kind"]:
            names["listKind"] = names["kind"] + "List"
    if spec.get("conversion") is None:
        spec["conversion"] = {"strategy": "None"}
    webhook = (spec.get("conversion") or {}).get("webhook")
    service = (webhook or {}).get("clientConfig", {}).get("service") if isinstance(
        webhook, dict) else None
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = 443


def _crd_name_check(obj: Obj) -> NameCheck:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec, dict) else None
    plural = names.get("plural") if isinstance(names, dict) else ""
    group = spec.get("group") if isinstance(spec, dict) else ""
    required = f"{plural}.{group}"

    def check(name: str) -> list[str]:
        problems = list(dns1123_subdomain(name))
        if name != required:
            problems.append('must be spec.names.plural+"."+spec.group')
        return problems

    return check


def _validate_crd(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    group = get_str(errs, spec, "group", path="spec")
    if not group:
        errs.required("spec.group")
    elif dns1123_subdomain(group):
        errs.invalid("spec.group", group, ",".join(dns1123_subdomain(group)))
    elif "." not in group:
        errs.invalid("spec.group", group, "should be a domain with at least one dot")
    scope = get_str(errs, spec, "scope", path="spec")
    if not scope:
        errs.required("spec.scope")
    elif scope not in ("Cluster", "Namespaced"):
        errs.not_supported("spec.scope", scope, ("Cluster", "Namespaced"))
    versions = get_list(errs, spec, "versions", path="spec")
    storage, names = 0, set()
    unique = True
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(version, dict):
            errs.decode(path, version, "v1.CustomResourceDefinitionVersion")
            continue
        if version.get("storage") is True:
            storage += 1
        name = get_str(errs, version, "name", path=path)
        unique = unique and name not in names
        names.add(name)
        problems = dns1035_label(name)
        if problems:
            errs.invalid(f"{path}.name", name, ",".join(problems))
        schema = (version.get("schema") or {}).get("openAPIV3Schema") if isinstance(
            version.get("schema"), dict) else None
        schemas_openapi.validate_structural(errs, schema, f"{path}.schema.openAPIV3Schema")
    if not unique:
        errs.invalid("spec.versions", versions, "must contain unique version names")
    if storage != 1:
        errs.invalid("spec.versions", versions,
                     "must have exactly one version marked as storage version")
    crd_names = get_dict(errs, spec, "names", path="spec")
    for key in ("plural", "singular", "kind", "listKind"):
        if not get_str(errs, crd_names, key, path="spec.names"):
            errs.required(f"spec.names.{key}")
    _validate_crd_names(errs, crd_names, "spec.names")
    if spec.get("preserveUnknownFields") is True:
        errs.invalid("spec.preserveUnknownFields", True, "cannot set to true, set "
                     "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema "
                     "instead")
    conversion = get_dict(errs, spec, "conversion", path="spec")
    strategy = conversion.get("strategy")
    if strategy is not None and strategy not in ("None", "Webhook"):
        errs.not_supported("spec.conversion.strategy", strategy, ("None", "Webhook"))
    if strategy == "Webhook" and not isinstance(conversion.get("webhook"), dict):
        errs.required("spec.conversion.webhook",
                      "required when strategy is set to Webhook")


def _validate_crd_names(errs: FieldErrors, names: Obj, path: str) -> None:
    for key in ("plural", "singular"):
        value = names.get(key)
        if isinstance(value, str) and value and dns1035_label(value):
            errs.invalid(f"{path}.{key}", value, ",".join(dns1035_label(value)))
    for key in ("kind", "listKind"):
        value = names.get(key)
        if isinstance(value, str) and value and dns1035_label(value.lower()):
            errs.invalid(f"{path}.{key}", value, "may have mixed case, but should otherwise "
                         "match: " + ",".join(dns1035_label(value.lower())))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.invalid(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same")
    for key in ("shortNames", "categories"):
        for i, value in enumerate(names.get(key) or ()):
            problems = dns1035_label(value if isinstance(value, str) else str(value))
            if problems:
                errs.invalid(f"{path}.{key}[{i}]", value, ",".join(problems))


def _established(crd: Obj) -> bool:
    status = crd.get("status") if isinstance(crd.get("status"), dict) else {}
    conditions = status.get("conditions") if isinstance(status, dict) else None
    if not conditions:
        return True  # kubesim serves a CRD as soon as it is created
    return any(isinstance(c, dict) and c.get("type") == "Established" and c.get("status") == "True"
               for c in conditions)


def _validate_crd_update(errs: FieldErrors, old: Obj, new: Obj) -> None:
    old_spec, new_spec = pods.sub(old, "spec"), pods.sub(new, "spec")
    old_names, new_names = pods.sub(old_spec, "names"), pods.sub(new_spec, "names")
    if _established(old):
        if old_spec.get("scope") and new_spec.get("scope") != old_spec.get("scope"):
            errs.immutable("spec.scope", new_spec.get("scope"))
        if new_names.get("kind") != old_names.get("kind"):
            errs.immutable("spec.names.kind", new_names.get("kind"))
    if new_spec.get("group") != old_spec.get("group"):
        errs.immutable("spec.group", new_spec.get("group"))
    if new_names.get("plural") != old_names.get("plural"):
        errs.immutable("spec.names.plural", new_names.get("plural"))
    versions = {v.get("name") for v in new_spec.get("versions") or () if isinstance(v, dict)}
    stored = pods.sub(new, "status").get("storedVersions") or []
    for i, name in enumerate(stored):
        if name not in versions:
            errs.invalid(f"status.storedVersions[{i}]", name,
                         f"missing from spec.versions; {name} was previously a storage version, "
                         f"and must remain in spec.versions until a storage migration ensures "
                         f"no data remains persisted in {name} and removes {name} from "
                         "status.storedVersions")


# --- tables --------------------------------------------------------------------------------

_VALIDATORS: dict[tuple[str, str], Callable[[FieldErrors, Obj], None]] = {
    ("", "Pod"): pods.validate_pod,
    ("", "Secret"): _validate_secret,
    ("", "ConfigMap"): _validate_configmap,
    ("apps", "Deployment"): workloads.validate_deployment,
    ("apps", "ReplicaSet"): workloads.validate_replicaset,
    ("apps", "DaemonSet"): workloads.validate_daemonset,
    ("apps", "StatefulSet"): workloads.validate_statefulset,
    ("batch", "Job"): workloads.validate_job,
    ("batch", "CronJob"): workloads.validate_cronjob,
    ("coordination.k8s.io", "Lease"): _validate_lease,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"):
        _validate_webhook_configuration,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd,
}

_DEFAULTERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "Pod"): pods.default_pod,
    ("", "Namespace"): _default_namespace,
    ("", "Secret"): _default_secret,
    ("apps", "Deployment"): workloads.default_deployment,
    ("apps", "ReplicaSet"): workloads.default_replicaset,
    ("apps", "DaemonSet"): workloads.default_daemonset,
    ("apps", "StatefulSet"): workloads.default_statefulset,
    ("batch", "Job"): workloads.default_job,
    ("batch", "CronJob"): workloads.default_cronjob,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"):
        _default_webhook_configuration,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _default_crd,
}
