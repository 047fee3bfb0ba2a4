"""AdmissionReview admission.k8s.io/v1, and the partial view of a Pod the webhook reads.

Decoding is done in two steps, on purpose. The review itself must decode (or the
API server sent something that is not an AdmissionReview: HTTP 400), but its
object is kept as raw JSON, so a review for another kind, or a pod this webhook
cannot read, still gets a well-formed `allowed: true` answer with the request's
uid. The pod view names only the fields a rewrite reads, so msgspec skips the
rest of the object (env, volumes, status) without building it.
"""

from __future__ import annotations

import base64
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


class AdmissionRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    uid: str
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: str = ""
    dry_run: bool = False
    # raw JSON, decoded as a pod only when the request is for one; absent: an empty Raw
    # (msgspec.Raw cannot be part of a union with None)
    object: msgspec.Raw = msgspec.Raw()
    old_object: msgspec.Raw = msgspec.Raw()
    user_info: dict[str, Any] = msgspec.field(default_factory=dict)


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
    patch: str | None = None
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


_review_decoder = msgspec.json.Decoder(AdmissionReview)
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


def encode_patch(operations: list[dict[str, Any]]) -> str:
    """A JSONPatch as the AdmissionResponse carries it: base64 of the JSON array."""
    return base64.b64encode(_patch_encoder.encode(operations)).decode("ascii")


def encode_response(response: AdmissionResponse) -> bytes:
    return _response_encoder.encode(AdmissionReviewResponse(response=response))
