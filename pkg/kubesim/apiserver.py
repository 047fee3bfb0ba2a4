"""The request pipeline of the simulated API server, shared by HTTP and controllers.

kube-apiserver handles every write the same way: decode and default, run
mutating admission, default again, validate, then store with an optimistic
concurrency check on resourceVersion. ApiServer does that for every caller,
so a pod created by the simulated ReplicaSet controller passes through the
mutating webhooks exactly as it would on a real cluster.

It also owns what kube-apiserver and kube-controller-manager do around
deletion: finalizers and deletionTimestamp, graceful pod deletion,
ownerReference garbage collection with Background, Foreground and Orphan
propagation, namespace termination, and CRD installation and removal.

A resource may be a second view of another's objects (events.k8s.io/v1
Events of the core Events): the pipeline then converts what a request
writes into the stored form before validating it, and what it reads back
into the request's form (kubesim.events). Events also expire, as etcd
expires the lease kube-apiserver attaches to every Event write
(--event-ttl).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubesim import events, patching, statuses, validation
from kubesim.admitting import MutatingAdmission
from kubesim.resources import Registry, Resource
from kubesim.selectors import (
    FIELD_LABEL_CONVERSIONS,
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
    selector_from_label_selector,
    supported_fields,
)
from kubesim.storage import Key, Obj, Store, Watch, deep_copy, key_of

log = logging.getLogger(__name__)

Listener = Callable[[str, Resource, Obj], None]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# generateName suffixes use kube's alphabet: no vowels, no confusable digits
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation", "selfLink", "managedFields")
_GC_FINALIZERS = ("foregroundDeletion", "orphan")
# kube-apiserver's --event-ttl default
DEFAULT_EVENT_TTL = 3600.0


def now_rfc3339(offset: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def _spec_part(obj: Obj) -> dict[str, Any]:
    """Everything but metadata and status: a change here bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class ApiServer:
    """The simulated kube-apiserver, without HTTP."""

    def __init__(
        self,
        *,
        store: Store | None = None,
        admission: MutatingAdmission | None = None,
        service_resolver: Callable[[str, str, int], str | None] | None = None,
        event_ttl: float = DEFAULT_EVENT_TTL,
    ) -> None:
        self.registry = Registry()
        self.store = store or Store()
        self._listeners: list[Listener] = []
        self.admission = admission or MutatingAdmission(
            configurations=self._webhook_configurations,
            namespace_labels=self._namespace_labels,
            service_resolver=service_resolver,
        )
        self._namespaces = self.lookup("", "v1", "namespaces")
        self._pods = self.lookup("", "v1", "pods")
        self._crds = self.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        self._webhooks = self.lookup(
            "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations"
        )
        self._events = self.lookup("", "v1", "events")
        # Each Event write gets a fresh lease of event_ttl seconds (0: none). Leases wait in
        # a heap: (monotonic due time, write order, key, resourceVersion written).
        self.event_ttl = event_ttl
        self._expiries: builtins.list[tuple[float, int, Key, str]] = []
        self._lease_order = itertools.count()
        self._expiry_wakeup = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        # owner uid -> dependents (storage_key, key); uid -> (resource, key)
        self._dependents: dict[str, set[tuple[str, Key]]] = {}
        self._by_uid: dict[str, tuple[Resource, Key]] = {}
        self._gc_queue: asyncio.Queue[str] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        for name in INITIAL_NAMESPACES:
            namespace: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            validation.apply_defaults(self._namespaces, namespace)
            self._commit_new(self._namespaces, namespace)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background garbage collector (call from a running event loop)."""
        if self._gc_task is None:
            self._gc_queue = asyncio.Queue()
            self._gc_task = asyncio.create_task(self._collect_garbage(), name="kubesim-gc")
        if self._expiry_task is None:
            self._expiry_task = asyncio.create_task(self._expire_events(),
                                                    name="kubesim-event-ttl")

    async def stop(self) -> None:
        tasks = [t for t in (self._gc_task, self._expiry_task, *self._background)
                 if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._gc_task = None
        self._expiry_task = None
        await self.admission.close()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- lookups -----------------------------------------------------------------------------

    def lookup(self, group: str, version: str, plural: str) -> Resource:
        resource = self.registry.lookup(group, version, plural)
        if resource is None:
            raise statuses.ApiError(
                404, "NotFound", f"the server could not find the requested resource "
                f"({plural}{'.' + group if group else ''})"
            )
        return resource

    def resource(self, api_version: str, kind: str) -> Resource:
        resource = self.registry.for_kind(api_version, kind)
        if resource is None:
            raise statuses.ApiError(
                404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"'
            )
        return resource

    def _namespace_of(self, resource: Resource, namespace: str | None) -> str:
        if resource.namespaced:
            if not namespace:
                raise statuses.bad_request("the server could not find the requested resource: "
                                           "a namespace is required")
            return namespace
        return ""

    # -- reads -------------------------------------------------------------------------------

    def get(self, resource: Resource, *, namespace: str | None, name: str) -> Obj:
        return deep_copy(self.get_stored(resource, namespace=namespace, name=name))

    def get_stored(self, resource: Resource, *, namespace: str | None, name: str) -> Obj:
        """The stored object itself, not a copy (or its conversion to the form `resource`
        serves): for encoders only, never to be mutated."""
        obj = self.store.get(resource, (self._namespace_of(resource, namespace), name))
        if obj is None:
            raise statuses.not_found(resource.group, resource.plural, name)
        return self._from_storage(resource, obj)

    def list_stored(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], int, str | None, int | None]:
        labels, fields = self._selectors(resource, label_selector, field_selector)
        items, rv, token, remaining = self.store.list(
            resource, namespace=namespace or None, labels=labels, fields=fields,
            limit=limit, continue_token=continue_token,
        )
        if resource.cohabits_with:
            items = [self._from_storage(resource, item) for item in items]
        return items, rv, token, remaining

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str | None = None,
    ) -> Obj:
        items, rv, token, remaining = self.list_stored(
            resource, namespace=namespace, label_selector=label_selector,
            field_selector=field_selector, limit=limit, continue_token=continue_token,
        )
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            metadata["continue"] = token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        return deep_copy({
            "apiVersion": resource.api_version,
            "kind": resource.list_kind,
            "metadata": metadata,
            "items": items,
        })

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        send_initial_events: bool | None = None,
    ) -> Watch:
        """Watch semantics of kube-apiserver: an unset or "0" resourceVersion starts with
        synthetic ADDED events for the current state; any other starts after it."""
        labels, fields = self._selectors(resource, label_selector, field_selector)
        if send_initial_events is None:
            send_initial_events = resource_version in (None, "", "0")
        transform: Callable[[Obj], Obj] | None = None
        if resource.cohabits_with:
            def transform(obj: Obj) -> Obj:
                return self._from_storage(resource, obj)
        return self.store.watch(
            resource, namespace=namespace or None, labels=labels, fields=fields,
            resource_version=resource_version, send_initial=send_initial_events,
            transform=transform,
        )

    def _selectors(
        self, resource: Resource, label_selector: str, field_selector: str
    ) -> tuple[LabelSelector | None, FieldSelector | None]:
        labels = parse_label_selector(label_selector) if label_selector else None
        fields = None
        if field_selector:
            # a kind's field labels, converted (events.k8s.io/v1) to those of what is stored
            conversion = FIELD_LABEL_CONVERSIONS.get((resource.group, resource.kind))
            fields = parse_field_selector(
                field_selector,
                supported=conversion if conversion is not None else supported_fields(
                    resource.kind),
                convert=conversion,
            )
        if labels is not None and labels.empty:
            labels = None
        return labels, fields

    # -- writes ------------------------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Obj:
        """Create `obj`; `name` only for subresources created under an object (pods/binding)."""
        if subresource == "binding" and resource.group_resource == self._pods.group_resource:
            return await self._bind(obj, namespace=namespace, name=name, dry_run=dry_run)
        if subresource:
            raise statuses.method_not_allowed(
                f"create is not supported on {resource.plural}/{subresource}"
            )
        obj = deep_copy(obj)
        self._check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise statuses.bad_request("metadata must be an object")
        if meta.get("resourceVersion"):
            raise statuses.bad_request("resourceVersion should not be set on objects to be created")
        body_ns = meta.get("namespace")
        if resource.namespaced:
            ns = namespace or body_ns or ""
            if namespace and body_ns and body_ns != namespace:
                raise statuses.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            if not ns:
                raise statuses.bad_request("a namespace is required to create " + resource.plural)
            meta["namespace"] = ns
            self._check_namespace_open(ns)
        else:
            meta.pop("namespace", None)
        for server_field in _SERVER_FIELDS:
            meta.pop(server_field, None)
        if "status" in resource.subresources:
            # status is written only through the status subresource; built-in types store an
            # empty status struct (encoded as {}), custom resources none at all
            if resource.is_custom:
                obj.pop("status", None)
            else:
                obj["status"] = {}
        obj = self._prepare(resource, obj)
        obj = await self._admit(resource, operation="CREATE", obj=obj, old=None, dry_run=dry_run)
        obj = self._to_storage(resource, obj)
        # As in kube-apiserver's BeforeCreate, system fields and a generated name are filled
        # after mutating admission: webhooks see pods of a ReplicaSet with an empty name.
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if self._has_generation(resource):
            meta["generation"] = 1
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(resource, meta)
        obj = self._prepare(resource, obj)
        validation.validate_create(resource, obj)
        if resource.is_custom:
            validation.validate_custom(resource, obj)
        if resource is self._crds or resource.group_resource == self._crds.group_resource:
            self._check_crd_names(obj)
        key = key_of(obj)
        if self.store.get(resource, key) is not None:
            raise statuses.already_exists(resource.group, resource.plural, key[1])
        if resource.group_resource == self._crds.group_resource:
            self._crd_status(obj)
        if dry_run:
            return self._from_storage(resource, obj)
        stored = self._commit_new(resource, obj)
        return self._from_storage(resource, deep_copy(stored))

    # -- conversion between the served and the stored form ------------------------------------

    def _to_storage(self, resource: Resource, obj: Obj) -> Obj:
        """What is stored for `obj` written through `resource`: an Event, through either API,
        is stored in its core/v1 form, as kube-apiserver stores both."""
        if resource.storage_key == events.STORAGE:
            return events.to_internal(obj)
        return obj

    def _from_storage(self, resource: Resource, obj: Obj) -> Obj:
        """A stored object as `resource` serves it (a new top-level dict when converted)."""
        if resource.cohabits_with:
            return events.from_storage(resource.api_version, obj)
        return obj

    def _stored_as(self, resource: Resource) -> Resource:
        """The resource whose objects `resource` serves: itself, or the one it cohabits with
        (informers of core Events see Events written through events.k8s.io/v1)."""
        if resource.cohabits_with:
            for candidate in self.registry.all():
                if candidate.group_resource == resource.cohabits_with:
                    return candidate
        return resource

    def _has_generation(self, resource: Resource) -> bool:
        # the event strategy sets no metadata.generation (kube's Events have none)
        return resource.storage_key != events.STORAGE

    def _prepare(self, resource: Resource, obj: Obj) -> Obj:
        if resource.is_custom and resource.schema:
            obj = validation.prune(resource.schema, obj)
        validation.apply_defaults(resource, obj)
        return obj

    def _check_type(self, resource: Resource, obj: Obj) -> None:
        if not isinstance(obj, dict):
            raise statuses.bad_request("the body of the request must be a JSON object")
        api_version = obj.setdefault("apiVersion", resource.api_version)
        kind = obj.setdefault("kind", resource.kind)
        if kind != resource.kind or api_version.rpartition("/")[0] != resource.group:
            raise statuses.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({resource.api_version})" if kind == resource.kind else
                f"{kind} in version \"{api_version}\" cannot be handled as a {resource.kind}"
            )
        obj["apiVersion"] = resource.api_version

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self.store.get(self._namespaces, ("", namespace))
        if ns is None:
            raise statuses.not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise statuses.forbidden(
                "", "namespaces", namespace,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _generate_name(self, resource: Resource, meta: dict[str, Any]) -> str:
        prefix = str(meta["generateName"])[: 63 - 5]
        namespace = meta.get("namespace") or ""
        for _ in range(16):
            name = prefix + "".join(random.choices(_NAME_ALPHABET, k=5))
            if self.store.get(resource, (namespace, name)) is None:
                return name
        raise statuses.already_exists(resource.group, resource.plural, prefix)

    async def _admit(
        self, resource: Resource, *, operation: str, obj: Obj, old: Obj | None, dry_run: bool,
        subresource: str = "",
    ) -> Obj:
        meta = obj["metadata"]
        return await self.admission.admit(
            resource=resource, subresource=subresource, operation=operation, obj=obj,
            old_obj=old, namespace=meta.get("namespace") or None, name=meta.get("name", ""),
            dry_run=dry_run,
        )

    async def update(
        self,
        resource: Resource,
        obj: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        namespace: str | None = None,
        name: str | None = None,
    ) -> Obj:
        obj = deep_copy(obj)
        self._check_type(resource, obj)
        meta = obj.get("metadata") or {}
        body_name = meta.get("name")
        name = name or body_name
        if not name:
            raise statuses.bad_request("name is required for update")
        if body_name and body_name != name:
            raise statuses.bad_request(
                "the name of the object does not match the name on the URL"
            )
        ns = namespace if namespace is not None else meta.get("namespace")
        if resource.namespaced and meta.get("namespace") and ns and meta["namespace"] != ns:
            raise statuses.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        expected = meta.get("resourceVersion") or None
        return await self._update(
            resource, namespace=ns, name=name, subresource=subresource, dry_run=dry_run,
            expected_rv=expected, mutate=lambda _old: obj,
        )

    async def patch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        if patch_type == APPLY_PATCH:
            raise statuses.unsupported_media_type(
                "server-side apply is not supported by kubesim; use client-side apply"
            )

        def mutate(old: Obj) -> Obj:
            if patch_type == MERGE_PATCH:
                new = patching.merge_patch(old, patch)
            elif patch_type == JSON_PATCH:
                new = patching.json_patch(old, patch)
            elif patch_type == STRATEGIC_PATCH:
                if resource.is_custom:
                    raise statuses.unsupported_media_type(
                        f"the body of the request was in an unknown format - accepted media "
                        f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
                    )
                new = patching.strategic_merge_patch(old, patch, kind=resource.kind)
            else:
                raise statuses.unsupported_media_type(f"unsupported patch type {patch_type!r}")
            if not isinstance(new, dict):
                raise statuses.bad_request("the patch did not produce an object")
            return new

        expected = None
        if isinstance(patch, dict):
            expected = ((patch.get("metadata") or {}).get("resourceVersion")) or None
        return await self._update(
            resource, namespace=namespace, name=name, subresource=subresource, dry_run=dry_run,
            expected_rv=expected, mutate=mutate,
        )

    async def _update(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
        expected_rv: str | None,
        mutate: Callable[[Obj], Obj],
    ) -> Obj:
        """Apply `mutate` (on the object as `resource` serves it) and store the result."""
        return self._from_storage(resource, await self._update_stored(
            resource, namespace=namespace, name=name, subresource=subresource,
            dry_run=dry_run, expected_rv=expected_rv, mutate=mutate,
        ))

    async def _update_stored(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
        expected_rv: str | None,
        mutate: Callable[[Obj], Obj],
    ) -> Obj:
        if subresource and subresource not in resource.subresources:
            raise statuses.ApiError(
                404, "NotFound", f"the server could not find the requested resource "
                f"({resource.plural}/{subresource})"
            )
        ns = self._namespace_of(resource, namespace)
        # Admission awaits, so another write may land in between: like kube-apiserver's
        # GuaranteedUpdate, re-read and re-apply when the stored object moved (patches and
        # unconditional updates only; a stale explicit resourceVersion is a 409).
        for _attempt in range(8):
            old = self.store.get(resource, (ns, name))
            if old is None:
                raise statuses.not_found(resource.group, resource.plural, name)
            old_rv = old["metadata"]["resourceVersion"]
            if expected_rv is not None and expected_rv != old_rv:
                raise statuses.conflict(
                    resource.group, resource.plural, name,
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            old_copy = deep_copy(old)
            new = mutate(self._from_storage(resource, deep_copy(old)))
            if not isinstance(new, dict):
                raise statuses.bad_request("the body of the request must be a JSON object")
            self._check_type(resource, new)
            new = self._to_storage(resource, new)
            new = self._merge_for_subresource(resource, old_copy, new, subresource)
            new = self._prepare(resource, new)
            if subresource in (None, "ephemeralcontainers"):
                # webhooks see both objects as the request's API serves them
                new = await self._admit(
                    resource, operation="UPDATE", obj=self._from_storage(resource, new),
                    old=self._from_storage(resource, old_copy), dry_run=dry_run,
                    subresource=subresource or "",
                )
                new = self._to_storage(resource, new)
                new = self._merge_for_subresource(resource, old_copy, new, subresource)
                new = self._prepare(resource, new)
            validation.validate_update(resource, old_copy, new, subresource=subresource)
            if resource.is_custom:
                validation.validate_custom(resource, new)
            current = self.store.get(resource, (ns, name))
            if current is None:
                raise statuses.not_found(resource.group, resource.plural, name)
            if current["metadata"]["resourceVersion"] != old_rv:
                if expected_rv is not None:
                    raise statuses.conflict(
                        resource.group, resource.plural, name,
                        "the object has been modified; please apply your changes to the "
                        "latest version and try again",
                    )
                continue
            if self._has_generation(resource) and _spec_part(new) != _spec_part(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
            if resource.group_resource == self._crds.group_resource:
                self._crd_status(new)
            if dry_run:
                return new
            if self._same(old, new):
                return deep_copy(old)  # a no-op update writes nothing and keeps the rv
            if self._finished_by_update(old, new):
                self._remove(resource, new)
                return new
            stored = self._commit_existing(resource, new, old)
            return deep_copy(stored)
        raise statuses.conflict(resource.group, resource.plural, name,
                                "too many concurrent writes; try again")

    # -- pods/binding ------------------------------------------------------------------------

    async def _bind(self, binding: Obj, *, namespace: str | None, name: str | None,
                    dry_run: bool) -> Obj:
        """What the scheduler does: assign an unbound pod to a node (pkg/registry/core/pod)."""
        if not isinstance(binding, dict) or binding.get("kind", "Binding") != "Binding":
            raise statuses.bad_request("the body of a pods/binding request must be a Binding")
        meta = binding.get("metadata") or {}
        pod_name = meta.get("name") or name
        if name and meta.get("name") and meta["name"] != name:
            raise statuses.bad_request("the name of the Binding does not match the pod's name")
        target = (binding.get("target") or {}).get("name")
        if not pod_name or not target:
            raise statuses.invalid("", "Binding", pod_name or "", [
                ("FieldValueRequired", "target.name", "Required value")])
        ns = self._namespace_of(self._pods, namespace or meta.get("namespace"))
        await self.admission.admit(
            resource=self._pods, subresource="binding", operation="CREATE", obj=binding,
            old_obj=None, namespace=ns, name=pod_name, dry_run=dry_run,
        )
        pod = self.store.get(self._pods, (ns, pod_name))
        if pod is None:
            raise statuses.not_found("", "pods", pod_name)
        pod_meta = pod["metadata"]
        if meta.get("uid") and meta["uid"] != pod_meta["uid"]:
            raise statuses.conflict("", "pods", pod_name,
                                    f"Precondition failed: UID in precondition: {meta['uid']}, "
                                    f"UID in object meta: {pod_meta['uid']}")
        if pod_meta.get("deletionTimestamp"):
            raise statuses.conflict("", "pods", pod_name, "pod is being deleted, cannot be "
                                    "assigned to a host")
        bound_to = (pod.get("spec") or {}).get("nodeName")
        if bound_to:
            raise statuses.conflict("", "pods", pod_name,
                                    f'pod {pod_name} is already assigned to node "{bound_to}"')
        new = deep_copy(pod)
        new["spec"]["nodeName"] = target
        for key in ("annotations", "labels"):
            if meta.get(key):
                new["metadata"].setdefault(key, {}).update(meta[key])
        conditions = [c for c in (new.setdefault("status", {}).get("conditions") or [])
                      if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True",
                           "lastProbeTime": None, "lastTransitionTime": now_rfc3339()})
        new["status"]["conditions"] = conditions
        if not dry_run:
            self._commit_existing(self._pods, new, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    # -- scale subresource ---------------------------------------------------------------------

    def get_scale(self, resource: Resource, *, namespace: str | None, name: str) -> Obj:
        return self._scale_of(self.get_stored(resource, namespace=namespace, name=name))

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        selector = selector_from_label_selector(spec.get("selector") or {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                               "creationTimestamp") if k in meta},
            "spec": {"replicas": int(spec.get("replicas", 1))},
            "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)),
                       "selector": str(selector)},
        }

    async def update_scale(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        body: Any,
        patch_type: str | None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT (patch_type None) or PATCH of the scale subresource: only spec.replicas moves."""
        current = self.get_scale(resource, namespace=namespace, name=name)
        if patch_type is None:
            scale = body
        elif patch_type == JSON_PATCH:
            scale = patching.json_patch(current, body)
        elif patch_type in (MERGE_PATCH, STRATEGIC_PATCH):
            # Scale has no lists, so a strategic merge patch is a merge patch
            scale = patching.merge_patch(current, body)
        else:
            raise statuses.unsupported_media_type(f"unsupported patch type {patch_type!r}")
        if not isinstance(scale, dict):
            raise statuses.bad_request("the body of the request must be a Scale object")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise statuses.invalid("autoscaling", "Scale", name, [(
                "FieldValueInvalid", "spec.replicas",
                f"Invalid value: {replicas!r}: must be greater than or equal to 0")])
        expected = (scale.get("metadata") or {}).get("resourceVersion") or None
        if patch_type is not None and expected == current["metadata"].get("resourceVersion"):
            expected = None  # a patch that left the resourceVersion alone sets no precondition

        def mutate(old: Obj) -> Obj:
            old.setdefault("spec", {})["replicas"] = replicas
            return old

        updated = await self._update(
            resource, namespace=namespace, name=name, subresource=None, dry_run=dry_run,
            expected_rv=expected, mutate=mutate,
        )
        return self._scale_of(updated)

    @staticmethod
    def _finished_by_update(old: Obj, new: Obj) -> bool:
        """kube's shouldDeleteDuringUpdate: an update that removes the last finalizer of an
        object whose deletion is due (deletionTimestamp set, grace period 0) deletes it."""
        old_meta, new_meta = old["metadata"], new["metadata"]
        return (
            not new_meta.get("finalizers")
            and bool(old_meta.get("finalizers"))
            and bool(old_meta.get("deletionTimestamp"))
            and int(old_meta.get("deletionGracePeriodSeconds") or 0) == 0
        )

    @staticmethod
    def _same(old: Obj, new: Obj) -> bool:
        a = {**old, "metadata": {k: v for k, v in old["metadata"].items()
                                 if k != "resourceVersion"}}
        b = {**new, "metadata": {k: v for k, v in new["metadata"].items()
                                 if k != "resourceVersion"}}
        return a == b

    def _merge_for_subresource(
        self, resource: Resource, old: Obj, new: Obj, subresource: str | None
    ) -> Obj:
        """Keep what the endpoint may not change, as kube's update strategies do."""
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for name in ("uid", "creationTimestamp", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "generation", "namespace", "name"):
            if name in old_meta:
                meta[name] = old_meta[name]
            else:
                meta.pop(name, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if subresource == "status":
            merged = deep_copy(old)
            merged["status"] = new.get("status", {})
            # status writers may change labels/annotations? kube resets metadata except
            # ownerReferences-free fields; keep the old metadata as the status strategies do.
            return merged
        if subresource == "ephemeralcontainers":
            merged = deep_copy(old)
            merged.setdefault("spec", {})["ephemeralContainers"] = (
                new.get("spec", {}).get("ephemeralContainers") or []
            )
            return merged
        if subresource == "scale":
            # scale speaks autoscaling/v1 Scale: get_scale and update_scale handle it
            raise statuses.method_not_allowed("scale is updated through update_scale")
        if "status" in resource.subresources:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        return new

    # -- delete ------------------------------------------------------------------------------

    async def delete(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = None,
        preconditions: dict[str, Any] | None = None,
        grace_period_seconds: int | None = None,
        dry_run: bool = False,
    ) -> Obj:
        return self._from_storage(resource, await self._delete_stored(
            resource, namespace=namespace, name=name, propagation_policy=propagation_policy,
            preconditions=preconditions, grace_period_seconds=grace_period_seconds,
            dry_run=dry_run,
        ))

    async def _delete_stored(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        propagation_policy: str | None,
        preconditions: dict[str, Any] | None,
        grace_period_seconds: int | None,
        dry_run: bool,
    ) -> Obj:
        ns = self._namespace_of(resource, namespace)
        old = self.store.get(resource, (ns, name))
        if old is None:
            raise statuses.not_found(resource.group, resource.plural, name)
        meta = old["metadata"]
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                raise statuses.conflict(
                    resource.group, resource.plural, name,
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                    f"UID in object meta: {meta['uid']}",
                )
            rv = preconditions.get("resourceVersion")
            if rv and rv != meta["resourceVersion"]:
                raise statuses.conflict(
                    resource.group, resource.plural, name,
                    f"Precondition failed: ResourceVersion in precondition: {rv}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                )
        if propagation_policy not in (None, "Background", "Foreground", "Orphan"):
            raise statuses.invalid(resource.group, resource.kind, name, [(
                "FieldValueNotSupported", "propagationPolicy",
                f'Unsupported value: "{propagation_policy}": supported values: '
                '"Foreground", "Background", "Orphan"')])
        # mutating webhooks see DELETE too (object null, oldObject the object); they cannot
        # change anything, but a failing one with failurePolicy Fail blocks the deletion
        served = self._from_storage(resource, old)
        await self.admission.admit(
            resource=resource, subresource="", operation="DELETE", obj=served, old_obj=served,
            namespace=ns or None, name=name, dry_run=dry_run,
        )
        current = self.store.get(resource, (ns, name))
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            raise statuses.not_found(resource.group, resource.plural, name)
        old, meta = current, current["metadata"]
        if dry_run:
            return deep_copy(old)
        new = deep_copy(old)
        new_meta = new["metadata"]
        finalizers: list[str] = list(new_meta.get("finalizers") or [])
        if propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation_policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if resource.group_resource == self._namespaces.group_resource:
            return self._terminate_namespace(new)
        if resource.group_resource == self._crds.group_resource and not finalizers:
            return self._delete_crd(new)
        graceful = self._grace_period(resource, old, grace_period_seconds)
        if finalizers or graceful:
            if new_meta.get("deletionTimestamp"):
                if not graceful and not finalizers:
                    return self._remove(resource, new)
                if graceful is not None and graceful < int(
                    new_meta.get("deletionGracePeriodSeconds") or 0
                ):
                    # a shorter grace period shortens a deletion already under way
                    new_meta["deletionGracePeriodSeconds"] = graceful
                    return deep_copy(self._commit_existing(resource, new, old))
                if finalizers == list(old["metadata"].get("finalizers") or []):
                    return deep_copy(old)
            new_meta["deletionTimestamp"] = now_rfc3339(graceful or 0)
            new_meta["deletionGracePeriodSeconds"] = graceful or 0
            new_meta["finalizers"] = finalizers
            if not finalizers:
                new_meta.pop("finalizers")
            stored = self._commit_existing(resource, new, old)
            if any(f in _GC_FINALIZERS for f in finalizers):
                self._enqueue_gc(meta["uid"])
            return deep_copy(stored)
        return self._remove(resource, new)

    def _grace_period(self, resource: Resource, obj: Obj, requested: int | None) -> int:
        """Pods bound to a node terminate gracefully: the kubelet finishes the deletion."""
        if resource.group_resource != self._pods.group_resource:
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0  # never scheduled: no kubelet will finish it
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(requested, 0)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _remove(self, resource: Resource, obj: Obj) -> Obj:
        rv = self.store.next_rv()
        obj = deep_copy(obj)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.commit(resource, etype="DELETED", obj=obj, rv=rv)
        uid = obj["metadata"]["uid"]
        self._by_uid.pop(uid, None)
        for ref in obj["metadata"].get("ownerReferences") or []:
            deps = self._dependents.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard((resource.storage_key, key_of(obj)))
        self._notify("DELETED", resource, obj)
        if uid in self._dependents:
            self._enqueue_gc(uid)
        return deep_copy(obj)

    # -- commits -----------------------------------------------------------------------------

    def _commit_new(self, resource: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        if self._has_generation(resource):
            meta.setdefault("generation", 1)
        rv = self.store.next_rv()
        meta["resourceVersion"] = str(rv)
        self.store.commit(resource, etype="ADDED", obj=obj, rv=rv)
        self._lease(resource, obj)
        self._by_uid[meta["uid"]] = (resource, key_of(obj))
        self._index_owners(resource, obj, None)
        if resource.group_resource == self._crds.group_resource:
            self._install_crd(obj)
        self._notify("ADDED", resource, obj)
        return obj

    def _commit_existing(self, resource: Resource, obj: Obj, old: Obj) -> Obj:
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.commit(resource, etype="MODIFIED", obj=obj, rv=rv)
        self._lease(resource, obj)
        self._index_owners(resource, obj, old)
        if resource.group_resource == self._crds.group_resource:
            self._install_crd(obj)
        self._notify("MODIFIED", resource, obj)
        return obj

    def _notify(self, etype: str, resource: Resource, obj: Obj) -> None:
        resource = self._stored_as(resource)
        for listener in self._listeners:
            try:
                listener(etype, resource, obj)
            except Exception:
                log.exception("listener failed on %s %s", etype, resource.plural)

    # -- event expiry ------------------------------------------------------------------------

    def _lease(self, resource: Resource, obj: Obj) -> None:
        """kube-apiserver writes every Event with an etcd lease of --event-ttl: an Event
        expires event_ttl seconds after its last write, unless written again."""
        if resource.storage_key != events.STORAGE or self.event_ttl <= 0:
            return
        lease = (time.monotonic() + self.event_ttl, next(self._lease_order), key_of(obj),
                 obj["metadata"]["resourceVersion"])
        heapq.heappush(self._expiries, lease)
        if self._expiries[0] is lease:
            self._expiry_wakeup.set()  # due before whatever the expirer waits for

    async def _expire_events(self) -> None:
        """etcd deleting the keys whose lease ran out: watchers see DELETED."""
        while True:
            delay = self._expiries[0][0] - time.monotonic() if self._expiries else None
            if delay is None or delay > 0:
                self._expiry_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._expiry_wakeup.wait(), delay)
                continue
            _, _, key, rv = heapq.heappop(self._expiries)
            obj = self.store.get(self._events, key)
            # a later write of the same Event leased it again (its own entry is queued)
            if obj is not None and obj["metadata"]["resourceVersion"] == rv:
                try:
                    self._remove(self._events, obj)
                except Exception:
                    log.exception("expiring event %s/%s failed", *key)

    # -- garbage collection ------------------------------------------------------------------

    def _index_owners(self, resource: Resource, obj: Obj, old: Obj | None) -> None:
        entry = (resource.storage_key, key_of(obj))
        old_uids = {r.get("uid") for r in (old or {}).get("metadata", {}).get(
            "ownerReferences") or []}
        new_uids = {r.get("uid") for r in obj["metadata"].get("ownerReferences") or []}
        for uid in old_uids - new_uids:
            if uid:
                self._dependents.get(uid, set()).discard(entry)
        for uid in new_uids - old_uids:
            if uid:
                self._dependents.setdefault(uid, set()).add(entry)
                if uid not in self._by_uid:
                    self._enqueue_gc(uid)  # a dangling owner: the dependent is garbage

    def _enqueue_gc(self, uid: str) -> None:
        if self._gc_queue is not None:
            self._gc_queue.put_nowait(uid)

    def _find(self, storage_key: str, key: Key) -> tuple[Resource, Obj] | None:
        for resource in self.registry.all():
            if resource.storage_key == storage_key and not resource.cohabits_with:
                obj = self.store.get(resource, key)
                return (resource, obj) if obj is not None else None
        return None

    async def _collect_garbage(self) -> None:
        """kube-controller-manager's garbage collector, driven by owner uids."""
        assert self._gc_queue is not None
        while True:
            uid = await self._gc_queue.get()
            try:
                await self._collect_owner(uid)
            except statuses.ApiError as exc:
                if exc.code != 404:
                    log.warning("garbage collection of dependents of %s: %s", uid, exc.message)
            except Exception:
                log.exception("garbage collection of dependents of %s failed", uid)

    async def _collect_owner(self, uid: str) -> None:
        owner = self._by_uid.get(uid)
        owner_obj = self.store.get(owner[0], owner[1]) if owner else None
        dependents = list(self._dependents.get(uid, ()))
        if owner_obj is not None:
            finalizers = owner_obj["metadata"].get("finalizers") or []
            if not owner_obj["metadata"].get("deletionTimestamp"):
                return
            if "orphan" in finalizers:
                for storage_key, key in dependents:
                    found = self._find(storage_key, key)
                    if found is None:
                        continue
                    resource, dep = found
                    refs = [r for r in dep["metadata"].get("ownerReferences") or []
                            if r.get("uid") != uid]
                    await self.patch(resource, namespace=key[0] or None, name=key[1],
                                     patch={"metadata": {"ownerReferences": refs or None}},
                                     patch_type=MERGE_PATCH)
                await self._drop_finalizer(owner[0], owner_obj, "orphan")  # type: ignore[index]
                return
            if "foregroundDeletion" in finalizers:
                blocking = 0
                for storage_key, key in dependents:
                    found = self._find(storage_key, key)
                    if found is None:
                        continue
                    resource, dep = found
                    blocking += 1
                    if not dep["metadata"].get("deletionTimestamp"):
                        await self.delete(resource, namespace=key[0] or None, name=key[1],
                                          propagation_policy="Foreground")
                if blocking == 0:
                    await self._drop_finalizer(owner[0], owner_obj,  # type: ignore[index]
                                               "foregroundDeletion")
                else:
                    self._retry_later(uid)
            return
        # owner is gone: dependents whose every owner is gone are deleted (Background)
        for storage_key, key in dependents:
            found = self._find(storage_key, key)
            if found is None:
                continue
            resource, dep = found
            refs = dep["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") in self._by_uid]
            if alive:
                remaining = [r for r in refs if r.get("uid") != uid]
                await self.patch(resource, namespace=key[0] or None, name=key[1],
                                 patch={"metadata": {"ownerReferences": remaining}},
                                 patch_type=MERGE_PATCH)
            elif not dep["metadata"].get("deletionTimestamp"):
                await self.delete(resource, namespace=key[0] or None, name=key[1],
                                  propagation_policy="Background")
        if owner is None:
            self._dependents.pop(uid, None)

    def _retry_later(self, uid: str) -> None:
        async def again() -> None:
            await asyncio.sleep(0.05)  # the GC's requeue delay while dependents terminate
            self._enqueue_gc(uid)

        task = asyncio.create_task(again())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drop_finalizer(self, resource: Resource, obj: Obj, finalizer: str) -> None:
        finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        await self.patch(
            resource, namespace=obj["metadata"].get("namespace"), name=obj["metadata"]["name"],
            patch={"metadata": {"finalizers": finalizers or None}}, patch_type=MERGE_PATCH,
        )

    # -- namespaces --------------------------------------------------------------------------

    def _terminate_namespace(self, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        if name in ("default", "kube-system", "kube-public"):
            raise statuses.forbidden("", "namespaces", name,
                                     "this namespace may not be deleted")
        old = self.store.get(self._namespaces, ("", name))
        assert old is not None
        if old["metadata"].get("deletionTimestamp"):
            return deep_copy(old)
        ns_obj["metadata"]["deletionTimestamp"] = now_rfc3339()
        ns_obj["metadata"]["deletionGracePeriodSeconds"] = 0
        ns_obj["status"] = {"phase": "Terminating"}
        stored = self._commit_existing(self._namespaces, ns_obj, old)
        task = asyncio.create_task(self._empty_namespace(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return deep_copy(stored)

    async def _empty_namespace(self, name: str) -> None:
        """The namespace controller: delete everything in it, then the namespace itself."""
        while True:
            remaining = 0
            for resource in self._storage_resources():
                if not resource.namespaced:
                    continue
                items, _, _, _ = self.store.list(resource, namespace=name, labels=None,
                                                 fields=None, limit=0, continue_token=None)
                for item in items:
                    remaining += 1
                    if item["metadata"].get("deletionTimestamp"):
                        continue
                    with contextlib.suppress(statuses.ApiError):
                        await self.delete(resource, namespace=name,
                                          name=item["metadata"]["name"],
                                          propagation_policy="Background")
            if remaining == 0:
                break
            await asyncio.sleep(0.05)  # the namespace controller's requeue while pods terminate
        ns = self.store.get(self._namespaces, ("", name))
        if ns is not None:
            self._remove(self._namespaces, ns)

    def _storage_resources(self) -> builtins.list[Resource]:
        """One resource per storage bucket (versions of a CRD share one, and a resource that
        cohabits with another shares the other's)."""
        seen: dict[str, Resource] = {}
        for resource in self.registry.all():
            if not resource.cohabits_with:
                seen.setdefault(resource.storage_key, resource)
        return list(seen.values())

    def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        ns = self.store.get(self._namespaces, ("", namespace))
        if ns is None:
            return None
        labels: dict[str, str] = dict(ns["metadata"].get("labels") or {})
        # kube-apiserver labels every namespace with its name (NamespaceDefaultLabelName)
        labels.setdefault("kubernetes.io/metadata.name", namespace)
        return labels

    def _webhook_configurations(self) -> builtins.list[Obj]:
        return list(self.store.bucket(self._webhooks).objects.values())

    # -- CRDs --------------------------------------------------------------------------------

    def _check_crd_names(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for resource in self.registry.all():
            if resource.group == spec.get("group") and resource.plural == names.get("plural"):
                owner = f"{resource.plural}.{resource.group}"
                if owner != crd["metadata"]["name"]:
                    raise statuses.already_exists("apiextensions.k8s.io",
                                                  "customresourcedefinitions", owner)

    @staticmethod
    def _crd_status(crd: Obj) -> None:
        spec = crd["spec"]
        storage = [v["name"] for v in spec.get("versions", []) if v.get("storage")]
        status = crd.setdefault("status", {})
        stored = list(status.get("storedVersions") or [])
        for version in storage:
            if version not in stored:
                stored.append(version)
        now = now_rfc3339()
        status.update({
            "acceptedNames": spec["names"],
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        })

    def _install_crd(self, crd: Obj) -> None:
        if crd["metadata"].get("deletionTimestamp"):
            return
        self.registry.install_crd(crd)

    def _delete_crd(self, crd: Obj) -> Obj:
        """Deleting a CRD deletes all its custom resources, then stops serving them."""
        removed = self.registry.remove_crd(crd["metadata"]["name"])
        if removed:
            bucket = self.store.bucket(removed[0])
            for key in list(bucket.keys):
                obj = bucket.objects.get(key)
                if obj is not None:
                    self._remove(removed[0], obj)
            self.store.drop(removed[0])
        return self._remove(self._crds, crd)
