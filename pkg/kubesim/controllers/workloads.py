"""What the workload controllers share: pod control, adoption, status writes.

kube's controllers share `controller.PodControl`, `ControllerRefManager`
(adopt orphans that match the selector, release owned objects that no longer
match) and the slow-start batching that keeps a controller whose pods are
all rejected (by a webhook, a quota) from sending hundreds of doomed
requests. kubesim's versions live here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kubesim.controllers.labels import selector_matches
from kubesim.controllers.objects import (
    Obj,
    controller_ref,
    deep_copy,
    is_terminating,
    labels_of,
    meta,
    name_of,
    namespace_of,
    uid_of,
)
from kubesim.statuses import ApiError

if TYPE_CHECKING:
    from kubesim.apiserver import ApiServer
    from kubesim.resources import Resource

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

# kube's ReplicaSet controller creates or deletes at most this many pods per sync.
BURST_REPLICAS = 500


async def slow_start(count: int, make: Callable[[int], Awaitable[Any]]) -> int:
    """controller.slowStartBatch: batches of 1, 2, 4, ... stopping at the first failure.

    Returns how many calls succeeded; re-raises the first failure after its
    batch has finished so the caller's key is retried with back-off.
    """
    done = 0
    batch = 1
    while done < count:
        size = min(batch, count - done)
        results = await asyncio.gather(
            *(make(done + i) for i in range(size)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        done += size - len(errors)
        if errors:
            for error in errors:
                if isinstance(error, asyncio.CancelledError):
                    raise error
            raise errors[0]
        batch *= 2
    return done


async def delete_ignoring_missing(
    api: ApiServer,
    resource: Resource,
    *,
    obj: Mapping[str, Any],
    propagation_policy: str | None = None,
    grace_period_seconds: int | None = None,
) -> None:
    """Delete exactly this object (uid precondition); a 404 means someone beat us to it."""
    try:
        await api.delete(
            resource,
            namespace=namespace_of(obj) or None,
            name=name_of(obj),
            preconditions={"uid": uid_of(obj)},
            propagation_policy=propagation_policy,
            grace_period_seconds=grace_period_seconds,
        )
    except ApiError as err:
        if err.code != 404:
            raise


async def claim(
    api: ApiServer,
    resource: Resource,
    *,
    owner: Mapping[str, Any],
    owner_ref: dict[str, Any],
    selector: Mapping[str, Any] | None,
    owned: Sequence[Obj],
    orphans: Sequence[Obj],
    can_adopt: Callable[[Obj], bool] | None = None,
) -> list[Obj]:
    """ControllerRefManager.Claim: the objects the owner controls after adopt/release.

    Owned objects whose labels stopped matching are released (our
    ownerReference removed); orphans that match are adopted, unless the owner
    or the orphan is being deleted. Failures on individual objects are left
    for the next sync, as kube does.
    """
    claimed: list[Obj] = []
    owner_uid = uid_of(owner)
    for obj in owned:
        if selector_matches(selector, labels_of(obj)):
            claimed.append(obj)
        elif not is_terminating(owner):
            await _patch_owner_refs(
                api,
                resource,
                obj=obj,
                refs=[
                    r for r in meta(obj).get("ownerReferences") or [] if r.get("uid") != owner_uid
                ],
            )
    if is_terminating(owner):
        return claimed
    for obj in orphans:
        if is_terminating(obj) or controller_ref(obj) is not None:
            continue
        if not selector_matches(selector, labels_of(obj)):
            continue
        if can_adopt is not None and not can_adopt(obj):
            continue
        refs = [r for r in meta(obj).get("ownerReferences") or [] if r.get("uid") != owner_uid]
        adopted = await _patch_owner_refs(api, resource, obj=obj, refs=[*refs, owner_ref])
        if adopted is not None:
            claimed.append(adopted)
    return claimed


async def _patch_owner_refs(
    api: ApiServer, resource: Resource, *, obj: Obj, refs: list[dict[str, Any]]
) -> Obj | None:
    try:
        return await api.patch(
            resource,
            namespace=namespace_of(obj) or None,
            name=name_of(obj),
            # metadata.resourceVersion in a patch is a precondition: adopt only what we saw.
            patch={
                "metadata": {
                    "ownerReferences": refs or None,
                    "resourceVersion": meta(obj).get("resourceVersion"),
                }
            },
            patch_type=MERGE_PATCH,
        )
    except ApiError as err:
        if err.code in (404, 409):
            return None
        raise


def owners_to_sync(
    old: Obj | None, new: Obj | None, *, owner_kind: str, owners: Mapping[str, Obj]
) -> Iterator[str]:
    """Keys of the `owner_kind` objects a pod change concerns: the pod's controller, before
    and after the change, or, for a live orphan, every owner whose selector matches it (an
    owner may adopt it, as kube's controllers do)."""
    for pod in (old, new):
        if pod is None:
            continue
        ref = controller_ref(pod)
        if ref is not None:
            if ref.get("kind") == owner_kind:
                yield f"{namespace_of(pod)}/{ref.get('name')}"
        elif pod is new and not is_terminating(pod):
            for key, owner in owners.items():
                if namespace_of(owner) == namespace_of(pod) and selector_matches(
                    (owner.get("spec") or {}).get("selector"), labels_of(pod)
                ):
                    yield key


def status_differs(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    current = current or {}
    return any(current.get(key) != value for key, value in wanted.items())


async def write_status(
    api: ApiServer, resource: Resource, *, obj: Obj, status: Mapping[str, Any]
) -> Obj:
    """Replace the given status fields through the status subresource, if they changed.

    The update carries the cached resourceVersion, so a stale cache yields a
    409 and the key is retried rather than clobbering a newer status.
    """
    if not status_differs(obj.get("status"), status):
        return obj
    updated = deep_copy(obj)
    merged = dict(updated.get("status") or {})
    for key, value in status.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    updated["status"] = merged
    return await api.update(resource, updated, subresource="status")


def omit_zero(status: dict[str, Any], *, keep: Sequence[str] = ()) -> dict[str, Any]:
    """Go's `omitempty`: zero counters and empty lists are absent from the JSON.

    Status writers pass the result to `write_status`, where None removes the
    field; clients of a real cluster see `readyReplicas` missing, not 0, and
    must cope, so kubesim does the same.
    """
    return {
        key: (None if key not in keep and value in (0, [], {}, "") else value)
        for key, value in status.items()
    }
