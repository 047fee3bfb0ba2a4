"""One AdmissionReview in, one answer out: decoding, exclusions, the rewrite, metrics.

Kept apart from the HTTP server so that it can be driven with bytes alone (tests,
the benchmark's profile). The contract with kube-apiserver:

* a body that is not an AdmissionReview admission.k8s.io/v1 request: HTTP 400
  with a metav1 Status whose message says what is wrong (client-go reports it);
* anything else gets HTTP 200, `allowed: true` and the request's uid: a review
  for another kind, a pod that cannot be read, an invalid image, a failed match
  condition, even a bug here (logged) — the webhook never stops a pod from being
  created, it only declines to rewrite it, and says why in a warning that
  kubectl prints;
* a JSONPatch only when something changes, so a reinvocation or a dry run gets
  the same answer as the first call, and a second pass none.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Final, NamedTuple

import msgspec

from clusterregistry.kinds import ORIGINAL_IMAGES_ANNOTATION
from clusterregistry.webhook import metrics as outcomes
from clusterregistry.webhook.metrics import WebhookMetrics
from clusterregistry.webhook.mutation import (
    AVAILABILITY_UNKNOWN,
    Result,
    Rules,
    remember,
    rewrite,
)
from clusterregistry.webhook.policies import (
    MATCH_CONDITION,
    MATCH_CONDITION_ERROR,
    MatchCondition,
    exclusion,
)
from clusterregistry.webhook.reviews import (
    VIEWED_METADATA,
    AdmissionResponse,
    Container,
    Pod,
    PodError,
    RequestHead,
    ReviewError,
    decode_pod,
    decode_pod_review,
    decode_review,
    decode_user_info,
    encode_patch,
    encode_response,
)

log = logging.getLogger(__name__)

_WARNING_MAX: Final = 256  # kube-apiserver may truncate longer warnings
_WARNINGS_MAX: Final = 16
_DECISIONS_MAX: Final = 4096
_PREFIX: Final = "clusterregistry: "
_status_encoder = msgspec.json.Encoder()


def _warnings(messages: list[str] | tuple[str, ...]) -> list[str]:
    out = [(_PREFIX + m)[:_WARNING_MAX] for m in messages[:_WARNINGS_MAX]]
    if len(messages) > _WARNINGS_MAX:
        out.append(f"{_PREFIX}{len(messages) - _WARNINGS_MAX} more warnings left out")
    return out


class Decision(NamedTuple):
    """An answer without its uid, and what to count for it: replayable for an equal pod."""

    outcome: str
    patch: bytes | None = None  # the JSONPatch document
    warnings: tuple[str, ...] = ()
    rewritten: tuple[tuple[str, int], ...] = ()  # (container kind, images)
    skipped: tuple[tuple[str, int], ...] = ()  # (reason, images)
    fallback: tuple[tuple[str, int], ...] = ()  # (fallback, images)

    def response(self, uid: str) -> AdmissionResponse:
        if self.patch:
            return AdmissionResponse(uid=uid, allowed=True, patch=self.patch,
                                     patch_type="JSONPatch", warnings=list(self.warnings))
        return AdmissionResponse(uid=uid, allowed=True, warnings=list(self.warnings))


def _decision(outcome: str, warnings: list[str] | tuple[str, ...] = (), **kw: Any) -> Decision:
    return Decision(outcome, warnings=tuple(_warnings(warnings)), **kw)


def _tally(items: list[str]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return tuple(counts.items())


def bad_request(message: str) -> bytes:
    """A metav1 Status, the body kube clients expect with an error code."""
    return _status_encoder.encode({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "BadRequest", "code": 400})


class Admitter:
    """Answers AdmissionReviews for pods with the rewrite `rules`.

    Once a pod is known not to be excluded, the rewrite depends on nothing but its
    container names and images, its original-images annotation and (ephemeral
    containers) the names already stored; with the Always policy, whose rules never
    change, the decision is kept under exactly those: the pods of one template (a
    ReplicaSet scaling up, a StatefulSet's replicas, a Job's completions) are rewritten
    once, whatever else differs between them. IfAvailable answers change with the
    artifact view and are never kept.
    """

    def __init__(self, *, rules: Rules, own_namespace: str, metrics: WebhookMetrics,
                 match: MatchCondition | None = None) -> None:
        self.rules = rules
        self.own_namespace = own_namespace
        self.metrics = metrics
        self.match = match
        self._keep = rules.policy == "Always"
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        # one decoding pass per review when the match condition (if any) reads no more of
        # the object than the one-pass view keeps: AOSM's default reads namespace and labels
        self._one_pass = match is None or match.reads_only_metadata(VIEWED_METADATA)
        self._reads_request = match is not None and match.reads("request")

    def review(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) for one request body."""
        started = time.perf_counter()
        request: RequestHead
        pod: Pod | PodError | None = None
        metadata: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
        one_pass = decode_pod_review(body) if self._one_pass else None
        if one_pass is not None:
            request, pod, metadata = one_pass.request, one_pass.pod, one_pass.metadata
            raw_object = None
        else:
            try:
                full = decode_review(body)
            except ReviewError as exc:
                self.metrics.outcome[outcomes.BAD_REQUEST].inc()
                return 400, bad_request(str(exc))
            request, raw_object = full, full.object
        try:
            decision = self._decide(request, pod=pod, raw_object=raw_object, metadata=metadata)
        except Exception:  # a bug must not block pod creation: fail open, loudly
            log.exception("admission %s failed; allowed without a rewrite", request.uid)
            decision = _decision(outcomes.ERROR, ["internal error; image references left as "
                                                  "they are"])
        self._count(decision)
        payload = encode_response(decision.response(request.uid))
        self.metrics.latency.observe(time.perf_counter() - started)
        return 200, payload

    def _decide(self, request: RequestHead, *, pod: Pod | PodError | None,
                raw_object: msgspec.Raw | None,
                metadata: dict[str, Any] | msgspec.UnsetType | None) -> Decision:
        """`pod` and `metadata` from the one-pass view, or `raw_object` to decode."""
        if (request.kind.kind != "Pod" or request.resource.group != ""
                or request.resource.resource != "pods"
                or request.sub_resource not in ("", "ephemeralcontainers")):
            what = request.kind.kind or "(no kind)"
            if request.sub_resource:
                what += f" (subresource {request.sub_resource})"
            return _decision(outcomes.NOT_A_POD,
                             [f"{what} is not a pod this webhook rewrites; nothing changed"])
        ephemeral = request.sub_resource == "ephemeralcontainers"
        # a pod's images are rewritten when it is created; later, only ephemeral containers
        # are added. An UPDATE of the pod itself is never rewritten: changing the image of
        # a running container would restart it.
        if request.operation != ("UPDATE" if ephemeral else "CREATE"):
            return _decision(outcomes.UNCHANGED)
        if pod is None:
            assert raw_object is not None
            try:
                pod = decode_pod(raw_object)
            except PodError as exc:
                pod = exc
        if isinstance(pod, PodError):
            return _decision(outcomes.UNREADABLE_POD, [f"{pod}; nothing changed"])
        return self._decide_pod(request, pod, raw_object=raw_object, metadata=metadata,
                                ephemeral=ephemeral)

    def _matches(self, request: RequestHead, *, raw_object: msgspec.Raw | None,
                 metadata: dict[str, Any] | msgspec.UnsetType | None) -> bool | str:
        assert self.match is not None
        if raw_object is not None:
            return self.match.evaluate_json(obj=raw_object, old_obj=request.old_object,
                                            request=partial(_cel_request, request))
        # the one-pass view: the expression reads nothing of the object but this metadata,
        # and nothing of oldObject (reads_only_metadata)
        obj = {} if metadata is msgspec.UNSET else {"metadata": metadata}
        return self.match.evaluate(obj=obj, old_obj=None,
                                   request=_cel_request(request) if self._reads_request
                                   else {})

    def _decide_pod(self, request: RequestHead, pod: Pod, *, raw_object: msgspec.Raw | None,
                    metadata: dict[str, Any] | msgspec.UnsetType | None,
                    ephemeral: bool) -> Decision:
        namespace = request.namespace or pod.metadata.namespace
        reason = exclusion(pod.metadata.labels, namespace, own_namespace=self.own_namespace)
        warnings: list[str] = []
        if reason is None and self.match is not None:
            matched = self._matches(request, raw_object=raw_object, metadata=metadata)
            if matched is False:
                reason = MATCH_CONDITION
            elif isinstance(matched, str):
                reason = MATCH_CONDITION_ERROR
                warnings.append(f"matchConditionExpression failed, nothing rewritten: {matched}")
        if reason is not None:
            images = (len(pod.spec.containers) + len(pod.spec.init_containers)
                      + len(pod.spec.ephemeral_containers))
            return _decision(outcomes.EXCLUDED, warnings,
                             skipped=((reason, images),) if images else ())
        existing: frozenset[str] = frozenset()
        if ephemeral:
            try:
                stored = decode_pod(request.old_object)
            except PodError:
                stored = None
            if stored is not None:
                existing = frozenset(c.name for c in stored.spec.ephemeral_containers)
        # everything the rewrite reads, and nothing else: pods from one template share it
        key = (ephemeral, existing, _images(pod.spec.containers),
               _images(pod.spec.init_containers), _images(pod.spec.ephemeral_containers),
               pod.metadata.annotations.get(ORIGINAL_IMAGES_ANNOTATION),
               pod.metadata.has_metadata, pod.metadata.has_annotations) if self._keep else None
        if key is not None:
            kept = self._decisions.get(key)
            if kept is not None:
                return kept
        result = rewrite(pod, self.rules, ephemeral_only=ephemeral, existing=existing)
        counts = _result_counts(result)
        if not result.patch:
            decision = _decision(outcomes.UNCHANGED, result.warnings, **counts)
        else:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rewrote %d images of pod %s/%s", len(result.rewritten), namespace,
                          pod.metadata.name or pod.metadata.generate_name)
            decision = _decision(outcomes.PATCHED, result.warnings,
                                 patch=encode_patch(result.patch), **counts)
        if key is not None:
            remember(self._decisions, key, decision, limit=_DECISIONS_MAX)
        return decision

    def _count(self, decision: Decision) -> None:
        metrics = self.metrics
        metrics.outcome[decision.outcome].inc()
        for kind, count in decision.rewritten:
            metrics.rewritten_by_kind[kind].inc(count)
        for reason, count in decision.skipped:
            metrics.skipped_for(reason).inc(count)
        for fallback, count in decision.fallback:
            metrics.fallback.labels(fallback).inc(count)


def _images(containers: list[Container]) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, c.image) for c in containers)


def _result_counts(result: Result) -> dict[str, Any]:
    fallback = ["Always" for item in result.rewritten if item.by_fallback]
    fallback += ["Never" for skip in result.skipped if skip.reason == AVAILABILITY_UNKNOWN]
    return {"rewritten": _tally([item.kind for item in result.rewritten]),
            "skipped": _tally([skip.reason for skip in result.skipped]),
            "fallback": _tally(fallback)}


def _cel_request(request: RequestHead) -> dict[str, Any]:
    """The AdmissionRequest as CEL's `request` sees it: without object and oldObject."""
    out: dict[str, Any] = {
        "uid": request.uid,
        "kind": msgspec.structs.asdict(request.kind),
        "resource": msgspec.structs.asdict(request.resource),
        "name": request.name,
        "namespace": request.namespace,
        "operation": request.operation,
        "userInfo": decode_user_info(request.user_info),
        "dryRun": request.dry_run,
    }
    if request.sub_resource:
        out["subResource"] = request.sub_resource
    return out
