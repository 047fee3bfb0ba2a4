"""The rewrite itself: a pod and the rules in, the JSONPatch and what was decided out.

`rewrite(pod, rules)` is pure: no clock, no I/O, no metrics, so every reference
form and every odd pod is tested without a server. Each image of every
container, init container and ephemeral container is parsed with the
distribution grammar; a source image becomes `<local>/<source-host>/<path>`
with its tag and digest exactly as written (a digest pins bytes the mirror
copies unchanged). The original references go into the annotation
`clusterregistry.io/original-images` (container name -> original), which the
relay reads, so every other service knows the source of a local reference.

Idempotent by construction: an image already in the local registry is never
rewritten again, and the annotation is recomputed from the pod, so a second
pass (reinvocationPolicy IfNeeded) produces no patch.

Ephemeral containers arrive as an UPDATE of the `ephemeralcontainers`
subresource. kube-apiserver keeps only `spec.ephemeralContainers` of such an
update (podEphemeralContainersStrategy.PrepareForUpdate copies the rest from
the stored pod after admission), so only those images are patched and the
annotation is left alone: a change to it would be dropped silently. Their
source stays recoverable with `references.from_local`, the mapping's inverse.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, Protocol, TypeVar

import msgspec

from clusterregistry import kinds, references
from clusterregistry.references import InvalidReferenceError, Reference
from clusterregistry.sources import SourceRules
from clusterregistry.webhook.reviews import Container, Pod

ContainerKind = Literal["containers", "initContainers", "ephemeralContainers"]
Policy = Literal["Always", "IfAvailable"]

# skip reasons beyond the source rules' (sources.*)
INVALID: Final = "invalid-reference"
UNMAPPABLE: Final = "unmappable"
NOT_AVAILABLE: Final = "not-available"
AVAILABILITY_UNKNOWN: Final = "availability-unknown"
EXISTING_EPHEMERAL: Final = "existing-ephemeral-container"

AVAILABLE_PHASE: Final = "Available"
_PLANS_MAX: Final = 4096
_ANNOTATION_PATH: Final = "/metadata/annotations/" + kinds.ORIGINAL_IMAGES_ANNOTATION.replace(
    "~", "~0").replace("/", "~1")
_annotation_encoder = msgspec.json.Encoder(order="sorted")
_annotation_decoder = msgspec.json.Decoder(dict[str, str])


class ArtifactIndex(Protocol):
    """What IfAvailable consults: the phase of a source (by `references.canonical`).

    `synced` is False while the view cannot be trusted (never loaded, NATS unreachable);
    the webhook then applies its fallback instead of a stale or empty answer.
    """

    @property
    def synced(self) -> bool: ...

    def phase(self, canonical: str) -> str | None: ...


class Plan(NamedTuple):
    """What the static rules say about one image spelling (cached: pods repeat images)."""

    source: Reference | None  # None: not a valid reference
    reason: str | None  # why it is not rewritten, whatever the artifacts say
    detail: str  # the parse or mapping error
    local_text: str  # where it is rewritten to ("" when it is not)
    canonical: str  # the key IfAvailable looks up


@dataclass(frozen=True)
class Rules:
    local_registry: str
    sources: SourceRules
    policy: Policy = "Always"
    artifacts: ArtifactIndex | None = None
    # IfAvailable while `artifacts` is not synced: rewrite anyway ("Always") or not ("Never")
    fallback: Literal["Always", "Never"] = "Always"
    # image text -> Plan, and repository (domain, path) -> _Mapping; the rules above never
    # change, so neither does a plan or a mapping
    plans: dict[str, Plan] = field(default_factory=dict, compare=False, repr=False)
    mappings: dict[tuple[str, str], _Mapping] = field(default_factory=dict, compare=False,
                                                      repr=False)

    def plan(self, image: str) -> Plan:
        return self.plans.get(image) or remember(self.plans, image, _make_plan(image, self))

    def mapping(self, source: Reference) -> _Mapping:
        """What the rules say about a repository: a new tag of it needs no new decision."""
        key = (source.domain, source.path)
        return self.mappings.get(key) or remember(self.mappings, key,
                                                  _make_mapping(source, self))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, *, limit: int = _PLANS_MAX) -> V:
    """Keep `value` under `key`, emptying the cache first when it holds `limit` entries
    (pods of new workloads must not grow it without bound); returns `value`."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


class _Mapping(NamedTuple):
    """The rules' decision for one repository, whatever its tag or digest."""

    reason: str | None
    detail: str
    local_path: str  # "" unless rewritten


class Rewritten(NamedTuple):
    kind: ContainerKind
    position: int
    name: str
    original: str
    image: str
    # rewritten by the fallback (IfAvailable, artifact view not synced)
    by_fallback: bool = False


class Skipped(NamedTuple):
    kind: ContainerKind
    position: int
    name: str
    image: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Result:
    rewritten: tuple[Rewritten, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.patch)


_KINDS: Final[tuple[ContainerKind, ...]] = ("containers", "initContainers",
                                            "ephemeralContainers")
_EPHEMERAL: Final[tuple[ContainerKind, ...]] = ("ephemeralContainers",)


def _containers(pod: Pod, kind: ContainerKind) -> list[Container]:
    if kind == "containers":
        return pod.spec.containers
    if kind == "initContainers":
        return pod.spec.init_containers
    return pod.spec.ephemeral_containers


def _make_mapping(source: Reference, rules: Rules) -> _Mapping:
    reason = rules.sources.skip_reason(source)
    if reason is not None:
        return _Mapping(reason, "", "")
    try:
        local = references.to_local(source, rules.local_registry)
    except InvalidReferenceError as exc:
        return _Mapping(UNMAPPABLE, str(exc), "")
    return _Mapping(None, "", local.path)


def _make_plan(image: str, rules: Rules) -> Plan:
    try:
        source = references.parse(image)
    except InvalidReferenceError as exc:
        return Plan(None, INVALID, str(exc), "", "")
    mapping = rules.mapping(source)
    # str(Reference) spelled out: tag and digest exactly as written
    version = (f":{source.tag}" if source.tag else "") + (
        f"@{source.digest}" if source.digest else "")
    canonical = f"{source.domain}/{source.path}{version or ':' + references.DEFAULT_TAG}"
    if mapping.reason is not None:
        return Plan(source, mapping.reason, mapping.detail, "", canonical)
    return Plan(source, None, "", f"{rules.local_registry}/{mapping.local_path}{version}",
                canonical)


def _decide(plan: Plan, rules: Rules) -> tuple[str | None, bool]:
    """(skip reason or None, whether the fallback decided)."""
    if plan.reason is not None or rules.policy == "Always":
        return plan.reason, False
    artifacts = rules.artifacts
    if artifacts is None or not artifacts.synced:
        return (None if rules.fallback == "Always" else AVAILABILITY_UNKNOWN), True
    if artifacts.phase(plan.canonical) != AVAILABLE_PHASE:
        return NOT_AVAILABLE, False
    return None, False


def _original_of(local: Reference, local_registry: str) -> str | None:
    """The source a local image was mapped from, or None when it is not such an image."""
    try:
        return str(references.from_local(local, local_registry))
    except InvalidReferenceError:
        return None


def rewrite(pod: Pod, rules: Rules, *, ephemeral_only: bool = False,
            existing: frozenset[str] = frozenset()) -> Result:
    """The JSONPatch that moves `pod`'s source images to the local registry, and why.

    `ephemeral_only`: an `ephemeralcontainers` subresource update (only those images may
    change, the annotation cannot). `existing`: names of ephemeral containers the stored
    pod already has; Kubernetes refuses any change to them, so they are left alone.
    """
    rewritten: list[Rewritten] = []
    skipped: list[Skipped] = []
    warnings: list[str] = []
    patch: list[dict[str, Any]] = []
    # container name -> the plan of the image it keeps (not rewritten), for the annotation
    kept: dict[str, Plan] = {}
    always = rules.policy == "Always"
    plans = rules.plans
    for kind in _EPHEMERAL if ephemeral_only else _KINDS:
        for index, container in enumerate(_containers(pod, kind)):
            image = container.image
            plan = plans.get(image) or rules.plan(image)
            if kind == "ephemeralContainers" and container.name in existing:
                skipped.append(Skipped(kind, index, container.name, image, EXISTING_EPHEMERAL))
                kept[container.name] = plan
                continue
            reason, by_fallback = (plan.reason, False) if always else _decide(plan, rules)
            if reason is not None:
                skipped.append(Skipped(kind, index, container.name, image, reason, plan.detail))
                if plan.detail:
                    warnings.append(f"{kind}[{index}] ({container.name}): image "
                                    f"{image[:300]!r} left as it is: {plan.detail}")
                kept[container.name] = plan
                continue
            rewritten.append(Rewritten(kind, index, container.name, image, plan.local_text,
                                       by_fallback))
            patch.append({"op": "replace", "path": f"/spec/{kind}/{index}/image",
                          "value": plan.local_text})
            kept.pop(container.name, None)
    if not ephemeral_only:
        annotation_ops, annotation_warnings = _annotation(pod, rules, rewritten, kept)
        patch.extend(annotation_ops)
        warnings.extend(annotation_warnings)
    return Result(tuple(rewritten), tuple(skipped), patch, tuple(warnings))


def _annotation(pod: Pod, rules: Rules, rewritten: list[Rewritten],
                kept: dict[str, Plan]) -> tuple[list[dict[str, Any]], list[str]]:
    """The ops that make the annotation say the original of every local image, if needed.

    Recomputed from the pod: entries for local images are kept (or derived from the local
    name), entries for containers whose image is not local, or that do not exist, are
    dropped; so the annotation never claims an original for an image pulled from its source.
    """
    warnings: list[str] = []
    current_text = pod.metadata.annotations.get(kinds.ORIGINAL_IMAGES_ANNOTATION)
    existing: dict[str, str] = {}
    if current_text is not None:
        try:
            existing = _annotation_decoder.decode(current_text)
        except msgspec.DecodeError:
            warnings.append(f"annotation {kinds.ORIGINAL_IMAGES_ANNOTATION} was not a JSON "
                            "object of container name to image; it is rewritten")
    wanted = {r.name: r.original for r in rewritten}
    for name, plan in kept.items():
        # only an image already in the local registry has an original to record (a name
        # rewritten in another list of the same pod has its original already)
        if (name in wanted or plan.source is None
                or not references.is_local(plan.source, rules.local_registry)):
            continue
        if name in existing:
            wanted[name] = existing[name]
        else:
            original = _original_of(plan.source, rules.local_registry)
            if original is not None:
                wanted[name] = original
    if current_text is not None and not warnings and wanted == existing:
        return [], warnings
    if current_text is None and not wanted:
        return [], warnings
    value = _annotation_encoder.encode(wanted).decode()
    if not pod.metadata.has_metadata:
        op = {"op": "add", "path": "/metadata",
              "value": {"annotations": {kinds.ORIGINAL_IMAGES_ANNOTATION: value}}}
    elif not pod.metadata.has_annotations:
        op = {"op": "add", "path": "/metadata/annotations",
              "value": {kinds.ORIGINAL_IMAGES_ANNOTATION: value}}
    else:
        # "add" on an existing member replaces it (RFC 6902 4.1)
        op = {"op": "add", "path": _ANNOTATION_PATH, "value": value}
    return [op], warnings

