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
from typing import Any, Final

import msgspec

from clusterregistry.webhook import metrics as outcomes
from clusterregistry.webhook.metrics import WebhookMetrics
from clusterregistry.webhook.mutation import AVAILABILITY_UNKNOWN, Result, Rules, rewrite
from clusterregistry.webhook.policies import (
    MATCH_CONDITION,
    MATCH_CONDITION_ERROR,
    MatchCondition,
    exclusion,
)
from clusterregistry.webhook.reviews import (
    AdmissionRequest,
    AdmissionResponse,
    Pod,
    PodError,
    ReviewError,
    decode_pod,
    decode_review,
    encode_patch,
    encode_response,
)

log = logging.getLogger(__name__)

_WARNING_MAX: Final = 256  # kube-apiserver may truncate longer warnings
_WARNINGS_MAX: Final = 16
_PREFIX: Final = "clusterregistry: "
_status_encoder = msgspec.json.Encoder()


def _warnings(messages: list[str] | tuple[str, ...]) -> list[str]:
    out = [(_PREFIX + m)[:_WARNING_MAX] for m in messages[:_WARNINGS_MAX]]
    if len(messages) > _WARNINGS_MAX:
        out.append(f"{_PREFIX}{len(messages) - _WARNINGS_MAX} more warnings left out")
    return out


def _allowed(uid: str, warnings: list[str] | tuple[str, ...] = (), *,
             patch: list[dict[str, Any]] | None = None) -> AdmissionResponse:
    if patch:
        return AdmissionResponse(uid=uid, allowed=True, patch=encode_patch(patch),
                                 patch_type="JSONPatch", warnings=_warnings(warnings))
    return AdmissionResponse(uid=uid, allowed=True, warnings=_warnings(warnings))


def bad_request(message: str) -> bytes:
    """A metav1 Status, the body kube clients expect with an error code."""
    return _status_encoder.encode({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "BadRequest", "code": 400})


class Admitter:
    """Answers AdmissionReviews for pods with the rewrite `rules`."""

    def __init__(self, *, rules: Rules, own_namespace: str, metrics: WebhookMetrics,
                 match: MatchCondition | None = None) -> None:
        self.rules = rules
        self.own_namespace = own_namespace
        self.metrics = metrics
        self.match = match

    def review(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) for one request body."""
        started = time.perf_counter()
        try:
            request = decode_review(body)
        except ReviewError as exc:
            self.metrics.outcome[outcomes.BAD_REQUEST].inc()
            return 400, bad_request(str(exc))
        try:
            response, outcome = self._respond(request)
        except Exception:  # a bug must not block pod creation: fail open, loudly
            log.exception("admission %s failed; allowed without a rewrite", request.uid)
            response = _allowed(request.uid, ["internal error; image references left as "
                                              "they are"])
            outcome = outcomes.ERROR
        self.metrics.outcome[outcome].inc()
        payload = encode_response(response)
        self.metrics.latency.observe(time.perf_counter() - started)
        return 200, payload

    def _respond(self, request: AdmissionRequest) -> tuple[AdmissionResponse, str]:
        uid = request.uid
        if (request.kind.kind != "Pod" or request.resource.group != ""
                or request.resource.resource != "pods"
                or request.sub_resource not in ("", "ephemeralcontainers")):
            what = request.kind.kind or "(no kind)"
            if request.sub_resource:
                what += f" (subresource {request.sub_resource})"
            return _allowed(uid, [f"{what} is not a pod this webhook rewrites; nothing changed"]
                            ), outcomes.NOT_A_POD
        if request.operation not in ("CREATE", "UPDATE"):
            return _allowed(uid), outcomes.UNCHANGED
        try:
            pod = decode_pod(request.object)
        except PodError as exc:
            return _allowed(uid, [f"{exc}; nothing changed"]), outcomes.UNREADABLE_POD
        namespace = request.namespace or pod.metadata.namespace
        reason = exclusion(pod.metadata.labels, namespace, own_namespace=self.own_namespace)
        warnings: list[str] = []
        if reason is None and self.match is not None:
            matched = self.match.evaluate_json(obj=request.object, old_obj=request.old_object,
                                               request=lambda: _cel_request(request))
            if matched is False:
                reason = MATCH_CONDITION
            elif isinstance(matched, str):
                reason = MATCH_CONDITION_ERROR
                warnings.append(f"matchConditionExpression failed, nothing rewritten: {matched}")
        if reason is not None:
            self._count_excluded(pod, reason)
            return _allowed(uid, warnings), outcomes.EXCLUDED
        result = rewrite(pod, self.rules, ephemeral_only=request.sub_resource != "")
        self._count(result)
        if not result.patch:
            return _allowed(uid, result.warnings), outcomes.UNCHANGED
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rewrote %d images of pod %s/%s", len(result.rewritten), namespace,
                      pod.metadata.name or pod.metadata.generate_name)
        return _allowed(uid, result.warnings, patch=result.patch), outcomes.PATCHED

    def _count(self, result: Result) -> None:
        metrics = self.metrics
        if result.rewritten:
            by_kind: dict[str, int] = {}
            fallback = 0
            for item in result.rewritten:
                by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
                fallback += item.by_fallback
            for kind, count in by_kind.items():
                metrics.rewritten_by_kind[kind].inc(count)
            if fallback:
                metrics.fallback.labels("Always").inc(fallback)
        for skip in result.skipped:
            metrics.skipped_for(skip.reason).inc()
            if skip.reason == AVAILABILITY_UNKNOWN:
                metrics.fallback.labels("Never").inc()

    def _count_excluded(self, pod: Pod, reason: str) -> None:
        images = (len(pod.spec.containers) + len(pod.spec.init_containers)
                  + len(pod.spec.ephemeral_containers))
        if images:
            self.metrics.skipped_for(reason).inc(images)


def _cel_request(request: AdmissionRequest) -> dict[str, Any]:
    """The AdmissionRequest as CEL's `request` sees it: without object and oldObject."""
    out: dict[str, Any] = {
        "uid": request.uid,
        "kind": msgspec.structs.asdict(request.kind),
        "resource": msgspec.structs.asdict(request.resource),
        "name": request.name,
        "namespace": request.namespace,
        "operation": request.operation,
        "userInfo": request.user_info,
        "dryRun": request.dry_run,
    }
    if request.sub_resource:
        out["subResource"] = request.sub_resource
    return out
