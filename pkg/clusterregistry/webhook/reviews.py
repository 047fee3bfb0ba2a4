"""AdmissionReview admission.k8s.io/v1, and the partial view of a Pod the webhook reads.

Decoding is done in two steps, on purpose. The review itself must decode (or the
API server sent something that is not an AdmissionReview: HTTP 400), but its
object is kept as raw JSON, so a review for another kind, or a pod this webhook
cannot read, still gets a well-formed `allowed: true` answer with the request's
uid. The pod view names only the fields a rewrite reads, so msgspec skips the
rest of the object (env, volumes, status) without building it.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"


class GroupVersionKind(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    resource: str = ""


class RequestHead(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What every AdmissionRequest has, whichever way its object is decoded."""

    uid: str
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: str = ""
    dry_run: bool = False
    # raw JSON, decoded only when needed (the stored pod of an ephemeral-containers update;
    # userInfo for a match condition that reads `request`); absent: an empty Raw
    # (msgspec.Raw cannot be part of a union with None)
    old_object: msgspec.Raw = msgspec.Raw()
    user_info: msgspec.Raw = msgspec.Raw()


class AdmissionRequest(RequestHead, frozen=True, kw_only=True, rename="camel"):
    # raw JSON, decoded as a pod only when the request is for one
    object: msgspec.Raw = msgspec.Raw()


class AdmissionReview(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    api_version: str = ""
    kind: str = ""
    request: AdmissionRequest | None = None


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    code: int = 0
    message: str = ""


class AdmissionResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel",
                        omit_defaults=True):
    uid: str
    # required, so omit_defaults never leaves it out (kube reads a missing `allowed` as false)
    allowed: bool
    # the JSONPatch document; msgspec writes bytes as base64, as the API wants it
    patch: bytes | None = None
    patch_type: str | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    status: Status | None = None


class AdmissionReviewResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    api_version: str = API_VERSION
    kind: str = KIND
    response: AdmissionResponse


# -- the pod, as far as a rewrite reads it --------------------------------------------------------


class Container(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    image: str = ""


class PodSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    containers: list[Container] = msgspec.field(default_factory=list)
    init_containers: list[Container] = msgspec.field(default_factory=list)
    ephemeral_containers: list[Container] = msgspec.field(default_factory=list)


class ObjectMeta(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    # whether the JSON had these members at all (a patch must add the map first)
    has_annotations: bool = False
    has_metadata: bool = True


class Pod(msgspec.Struct, frozen=True, kw_only=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec = PodSpec()


class _RawMeta(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _RawPod(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "Pod"
    metadata: _RawMeta | None = None
    spec: PodSpec = PodSpec()


# -- the one-pass view: a review whose object is decoded as a pod while the review is ------------


class _MetaView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    # UNSET: the member is absent, which a match condition can tell from an empty value
    name: str | msgspec.UnsetType = msgspec.UNSET
    generate_name: str | msgspec.UnsetType = msgspec.UNSET
    namespace: str | msgspec.UnsetType = msgspec.UNSET
    labels: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET
    annotations: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET


class _PodView(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "Pod"
    metadata: _MetaView | msgspec.UnsetType | None = msgspec.UNSET
    spec: PodSpec = PodSpec()


class _PodRequest(RequestHead, frozen=True, kw_only=True, rename="camel"):
    object: _PodView | None = None


class _PodReview(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    api_version: str = ""
    kind: str = ""
    request: _PodRequest | None = None


# the object's metadata members the one-pass view keeps (a match condition reading only
# these can be evaluated from it)
VIEWED_METADATA: Final = frozenset({"name", "generateName", "namespace", "labels",
                                    "annotations"})


class PodReview(msgspec.Struct, frozen=True):
    """A review decoded in one pass: its request, and its object as a pod or why not."""

    request: RequestHead
    pod: Pod | PodError
    # the object's metadata as its JSON had it, limited to VIEWED_METADATA (UNSET: absent)
    metadata: dict[str, Any] | msgspec.UnsetType | None


_review_decoder = msgspec.json.Decoder(AdmissionReview)
_pod_review_decoder = msgspec.json.Decoder(_PodReview)
_pod_decoder = msgspec.json.Decoder(_RawPod)
_response_encoder = msgspec.json.Encoder()
_patch_encoder = msgspec.json.Encoder()


class ReviewError(ValueError):
    """The body is not an AdmissionReview admission.k8s.io/v1 request (HTTP 400)."""


class PodError(ValueError):
    """The request's object cannot be read as a pod (allowed, no patch, a warning)."""


def decode_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview; `ReviewError` saying what is wrong otherwise."""
    try:
        review = _review_decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ReviewError(f"not an AdmissionReview: {exc}") from None
    if review.api_version != API_VERSION or review.kind != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{review.api_version or '(none)'} and {review.kind or '(none)'}"
        )
    if review.request is None:
        raise ReviewError("the AdmissionReview has no request")
    if not review.request.uid:
        raise ReviewError("the AdmissionReview request has no uid")
    return review.request


def decode_pod_review(body: bytes) -> PodReview | None:
    """The review and its pod from one decoding pass; None when that is not certain.

    The common case, an AdmissionReview for a readable pod, costs one pass over the body
    instead of two (review, then pod). Any body this view cannot take whole (not a
    review, a pod with odd member types, another kind of object) gives None: the caller
    then decodes the two-step way, which gives the exact 400 message or pod warning.
    """
    try:
        review = _pod_review_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    request = review.request
    if (review.api_version != API_VERSION or review.kind != KIND or request is None
            or not request.uid):
        return None
    view = request.object
    if view is None:
        return PodReview(request, PodError("the request has no object"), msgspec.UNSET)
    if view.kind != "Pod":
        return PodReview(request, PodError(f"the object is a {view.kind}, not a Pod"),
                         msgspec.UNSET)
    meta = view.metadata
    viewed: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    if meta is None:
        viewed = None
    elif meta is not msgspec.UNSET:
        viewed = {}
        for key, value in (("name", meta.name), ("generateName", meta.generate_name),
                           ("namespace", meta.namespace), ("labels", meta.labels),
                           ("annotations", meta.annotations)):
            if value is not msgspec.UNSET:
                viewed[key] = value
    labels = meta.labels if isinstance(meta, _MetaView) else None
    annotations = meta.annotations if isinstance(meta, _MetaView) else None
    pod = Pod(
        metadata=ObjectMeta(
            name=_text(meta, "name"), generate_name=_text(meta, "generate_name"),
            namespace=_text(meta, "namespace"), labels=labels or {},
            annotations=annotations or {},
            has_annotations=isinstance(annotations, dict),
            has_metadata=isinstance(meta, _MetaView),
        ),
        spec=view.spec,
    )
    return PodReview(request, pod, viewed)


def _text(meta: _MetaView | msgspec.UnsetType | None, field: str) -> str:
    if not isinstance(meta, _MetaView):
        return ""
    value = getattr(meta, field)
    return value if isinstance(value, str) else ""


def present(raw: msgspec.Raw) -> bool:
    """Whether a raw member holds a value (neither absent nor null)."""
    size = len(raw)
    # bytes(raw) copies: only look at the four bytes that could spell null
    return size > 0 and not (size == 4 and bytes(raw) == b"null")


def decode_pod(raw: msgspec.Raw) -> Pod:
    """The pod view of a request's object; `PodError` when it is absent or malformed."""
    if not present(raw):
        raise PodError("the request has no object")
    try:
        decoded = _pod_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise PodError(f"the object cannot be read as a Pod: {exc}") from None
    if decoded.kind != "Pod":
        raise PodError(f"the object is a {decoded.kind}, not a Pod")
    meta = decoded.metadata or _RawMeta()
    return Pod(
        metadata=ObjectMeta(
            name=meta.name, generate_name=meta.generate_name, namespace=meta.namespace,
            labels=meta.labels or {}, annotations=meta.annotations or {},
            has_annotations=meta.annotations is not None,
            has_metadata=decoded.metadata is not None,
        ),
        spec=decoded.spec,
    )


def decode_user_info(raw: msgspec.Raw) -> dict[str, Any]:
    """The request's userInfo as CEL's `request.userInfo` sees it ({} when absent or odd)."""
    if not present(raw):
        return {}
    try:
        value = _any_decoder.decode(raw)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_any_decoder = msgspec.json.Decoder()


def encode_patch(operations: list[dict[str, Any]]) -> bytes:
    """A JSONPatch document (AdmissionResponse.patch, base64 on the wire)."""
    return _patch_encoder.encode(operations)


def encode_response(response: AdmissionResponse) -> bytes:
    return _response_encoder.encode(AdmissionReviewResponse(response=response))
