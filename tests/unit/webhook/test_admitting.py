"""One AdmissionReview at a time: the contract with kube-apiserver, exclusions, metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import hypothesis
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from clusterregistry import config, kinds
from clusterregistry.webhook.admitting import Admitter
from clusterregistry.webhook.metrics import WebhookMetrics
from clusterregistry.webhook.serving import build_admitter

LOCAL = "edge.local:5000"


def settings(**webhook: Any) -> config.Settings:
    tree: dict[str, Any] = {"localRegistry": LOCAL, "namespace": "clusterregistry",
                            "webhook": webhook}
    return msgspec.convert(tree, config.Settings)


def admitter(**webhook: Any) -> tuple[Admitter, CollectorRegistry]:
    registry = CollectorRegistry()
    return build_admitter(settings(**webhook), metrics=WebhookMetrics(registry)), registry


def review(obj: Any, *, namespace: str = "nf", operation: str = "CREATE", kind: str = "Pod",
           resource: str = "pods", sub: str = "", dry_run: bool = False,
           old: Any = None) -> bytes:
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "requestKind": {"group": "", "version": "v1", "kind": kind},
        "name": "", "namespace": namespace, "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj, "oldObject": old, "dryRun": dry_run,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if sub:
        request["subResource"] = sub
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": request}).encode()


def pod(*images: str, namespace: str = "nf", labels: dict[str, str] | None = None) -> dict[
        str, Any]:
    meta: dict[str, Any] = {"generateName": "upf-", "namespace": namespace}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": f"c{i}", "image": image}
                                    for i, image in enumerate(images)]}}


def answer(the_admitter: Admitter, body: bytes) -> dict[str, Any]:
    status, payload = the_admitter.review(body)
    assert status == 200, payload
    decoded = json.loads(payload)
    assert decoded["apiVersion"] == "admission.k8s.io/v1"
    assert decoded["kind"] == "AdmissionReview"
    response: dict[str, Any] = decoded["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["allowed"] is True
    return response


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        assert "patchType" not in response
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_pod_is_rewritten_with_the_same_uid_and_a_json_patch() -> None:
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(pod("acr.io/nf/upf:1.2", "nginx")))
    ops = patch_of(response)
    assert {"op": "replace", "path": "/spec/containers/0/image",
            "value": f"{LOCAL}/acr.io/nf/upf:1.2"} in ops
    assert {"op": "replace", "path": "/spec/containers/1/image",
            "value": f"{LOCAL}/docker.io/library/nginx"} in ops
    annotation = next(op for op in ops if op["path"].startswith("/metadata"))
    assert json.loads(annotation["value"][kinds.ORIGINAL_IMAGES_ANNOTATION]) == {
        "c0": "acr.io/nf/upf:1.2", "c1": "nginx"}
    assert "warnings" not in response
    assert metric(registry, "clusterregistry_webhook_admissions_total", outcome="patched") == 1
    assert metric(registry, "clusterregistry_webhook_images_rewritten_total",
                  kind="containers") == 2
    assert metric(registry, "clusterregistry_webhook_admission_seconds_count") == 1


def test_dry_run_gets_the_same_answer() -> None:
    the_admitter, _ = admitter()
    wet = answer(the_admitter, review(pod("acr.io/a:1")))
    dry = answer(the_admitter, review(pod("acr.io/a:1"), dry_run=True))
    assert wet == dry


@pytest.mark.parametrize(("body", "message"), [
    (b"", "not an AdmissionReview"),
    (b"\xff\xfe\x00garbage", "not an AdmissionReview"),
    (b"[]", "not an AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", '
     b'"request": {"uid": "x"}}', "expected apiVersion admission.k8s.io/v1"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "has no request"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
     "uid"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", '
     b'"request": {"uid": ""}}', "has no uid"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", '
     b'"request": {"uid": 7}}', "Expected `str`"),
    (b"[" * 100_000, "not an AdmissionReview"),
])
def test_a_body_that_is_not_an_admission_review_is_a_400_saying_why(body: bytes,
                                                                     message: str) -> None:
    the_admitter, registry = admitter()
    status, payload = the_admitter.review(body)
    assert status == 400
    decoded = json.loads(payload)
    assert decoded["kind"] == "Status" and decoded["code"] == 400
    assert message in decoded["message"]
    assert metric(registry, "clusterregistry_webhook_admissions_total",
                  outcome="bad-request") == 1


@pytest.mark.parametrize(("kw", "why"), [
    ({"kind": "Deployment", "resource": "deployments"}, "Deployment"),
    ({"sub": "status"}, "subresource status"),
])
def test_a_review_for_something_else_is_allowed_unchanged_with_a_warning(
        kw: dict[str, Any], why: str) -> None:
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(pod("acr.io/a:1"), **kw))
    assert patch_of(response) == []
    assert why in response["warnings"][0]
    assert metric(registry, "clusterregistry_webhook_admissions_total",
                  outcome="not-a-pod") == 1


@pytest.mark.parametrize("obj", [
    None, "a string", [1, 2], {"kind": "Pod", "spec": {"containers": "nginx"}},
    {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": 42}]}},
    {"kind": "Service", "spec": {}},
    {"kind": "Pod", "metadata": {"labels": {"a": 1}}, "spec": {}},
])
def test_a_pod_that_cannot_be_read_is_allowed_unchanged_with_a_warning(obj: Any) -> None:
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(obj))
    assert patch_of(response) == []
    assert response["warnings"]
    assert metric(registry, "clusterregistry_webhook_admissions_total",
                  outcome="unreadable-pod") == 1


def test_delete_and_connect_are_answered_without_a_patch() -> None:
    the_admitter, _ = admitter()
    for operation in ("DELETE", "CONNECT"):
        assert patch_of(answer(the_admitter, review(None, operation=operation,
                                                    old=pod("acr.io/a:1")))) == []


@pytest.mark.parametrize(("namespace", "labels", "rewritten"), [
    ("nf", None, True),
    ("kube-system", None, False),
    ("kube-system", {"app": "coredns"}, False),
    ("kube-system", {"app": "commissioning"}, True),
    ("kube-system", {"app": "descheduler"}, True),
    ("kube-system", {"name": "cert-exporter"}, True),
    ("kube-system", {"name": "cert-exporter", "app": "x"}, True),
    ("clusterregistry", None, False),  # its own namespace
    ("nf", {kinds.MUTATE_LABEL: "false"}, False),
    ("nf", {kinds.MUTATE_LABEL: "true"}, True),
])
def test_the_default_match_condition_own_namespace_and_opt_out_label(
        namespace: str, labels: dict[str, str] | None, rewritten: bool) -> None:
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(pod("acr.io/a:1", namespace=namespace, labels=labels),
                                           namespace=namespace))
    assert bool(patch_of(response)) is rewritten
    if not rewritten:
        assert metric(registry, "clusterregistry_webhook_admissions_total",
                      outcome="excluded") == 1


def test_match_condition_results_are_cached_per_observed_values_not_conflated() -> None:
    the_admitter, _ = admitter()
    for _ in range(3):
        for labels, rewritten in (({"app": "commissioning"}, True), ({"app": "other"}, False),
                                  (None, False), ({}, False)):
            response = answer(the_admitter, review(
                pod("acr.io/a:1", namespace="kube-system", labels=labels),
                namespace="kube-system"))
            assert bool(patch_of(response)) is rewritten, labels


def test_match_condition_can_read_the_request_and_the_spec() -> None:
    expression = ('request.operation == "CREATE" && '
                  'object.spec.containers.all(c, !c.image.startsWith("quay.io/"))')
    the_admitter, _ = admitter(pod={"mutation": {"matchConditionExpression": expression}})
    assert patch_of(answer(the_admitter, review(pod("acr.io/a:1"))))
    assert not patch_of(answer(the_admitter, review(pod("acr.io/a:1", "quay.io/b:2"))))
    assert patch_of(answer(the_admitter, review(pod("acr.io/a:1"))))


def test_a_failing_match_condition_rewrites_nothing_and_says_so() -> None:
    the_admitter, registry = admitter(
        pod={"mutation": {"matchConditionExpression": 'object.metadata.labels.app == "x"'}})
    response = answer(the_admitter, review(pod("acr.io/a:1")))  # no labels: no such key
    assert patch_of(response) == []
    assert "matchConditionExpression failed" in response["warnings"][0]
    assert metric(registry, "clusterregistry_webhook_images_skipped_total",
                  reason="match-condition-error") == 1


def test_match_condition_not_enforced_when_turned_off() -> None:
    the_admitter, _ = admitter(enforceMatchCondition=False)
    assert patch_of(answer(the_admitter, review(pod("acr.io/a:1", namespace="kube-system"),
                                                namespace="kube-system")))


def test_ephemeral_containers_subresource_update() -> None:
    the_admitter, registry = admitter()
    stored = pod(f"{LOCAL}/acr.io/a:1")
    new = json.loads(json.dumps(stored))
    new["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1.36"}]
    response = answer(the_admitter, review(new, operation="UPDATE", sub="ephemeralcontainers",
                                           old=stored))
    assert patch_of(response) == [{"op": "replace", "path": "/spec/ephemeralContainers/0/image",
                                   "value": f"{LOCAL}/docker.io/library/busybox:1.36"}]
    assert metric(registry, "clusterregistry_webhook_images_rewritten_total",
                  kind="ephemeralContainers") == 1


def test_invalid_images_warn_and_count() -> None:
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(pod("Not/A/Valid:ref!", "acr.io/ok:1")))
    assert len(patch_of(response)) == 2  # one image and the annotation
    assert "c0" in response["warnings"][0]
    assert metric(registry, "clusterregistry_webhook_images_skipped_total",
                  reason="invalid-reference") == 1


def test_many_warnings_are_bounded() -> None:
    the_admitter, _ = admitter()
    response = answer(the_admitter, review(pod(*["BAD!"] * 40)))
    assert len(response["warnings"]) == 17
    assert all(len(w) <= 256 for w in response["warnings"])


def test_a_second_ephemeral_container_leaves_the_first_alone() -> None:
    # the first was added before the webhook existed: Kubernetes refuses any change to it
    the_admitter, registry = admitter()
    stored = pod(f"{LOCAL}/acr.io/a:1")
    stored["spec"]["ephemeralContainers"] = [{"name": "old", "image": "busybox:1.35"}]
    new = json.loads(json.dumps(stored))
    new["spec"]["ephemeralContainers"].append({"name": "new", "image": "busybox:1.36"})
    response = answer(the_admitter, review(new, operation="UPDATE", sub="ephemeralcontainers",
                                           old=stored))
    assert patch_of(response) == [{"op": "replace", "path": "/spec/ephemeralContainers/1/image",
                                   "value": f"{LOCAL}/docker.io/library/busybox:1.36"}]
    assert metric(registry, "clusterregistry_webhook_images_skipped_total",
                  reason="existing-ephemeral-container") == 1


def test_an_update_of_the_pod_itself_is_never_rewritten() -> None:
    # changing a running container's image would restart it
    the_admitter, registry = admitter()
    response = answer(the_admitter, review(pod("acr.io/a:2"), operation="UPDATE",
                                           old=pod("acr.io/a:1")))
    assert patch_of(response) == []
    assert metric(registry, "clusterregistry_webhook_admissions_total",
                  outcome="unchanged") == 1


def test_identical_pods_are_decided_once_and_counted_every_time() -> None:
    the_admitter, registry = admitter()
    first = answer(the_admitter, review(pod("acr.io/a:1", "nginx")))
    assert len(the_admitter._decisions) == 1
    second = answer(the_admitter, review(pod("acr.io/a:1", "nginx")))
    assert first == second
    assert len(the_admitter._decisions) == 1
    assert metric(registry, "clusterregistry_webhook_admissions_total", outcome="patched") == 2
    assert metric(registry, "clusterregistry_webhook_images_rewritten_total",
                  kind="containers") == 4
    # excluded by namespace: decided before any kept rewrite is looked at
    other = answer(the_admitter, review(pod("acr.io/a:1", "nginx", namespace="kube-system"),
                                        namespace="kube-system"))
    assert patch_of(other) == []
    # other labels (a StatefulSet's pod-name), same images: the same rewrite
    third = answer(the_admitter, review(pod("acr.io/a:1", "nginx", labels={"pod": "p-2"})))
    assert patch_of(third) == patch_of(first)
    # another image: another decision
    answer(the_admitter, review(pod("acr.io/a:2", "nginx")))
    assert len(the_admitter._decisions) == 2


def test_a_kept_decision_is_keyed_on_the_request_when_the_expression_reads_it() -> None:
    the_admitter, _ = admitter(
        pod={"mutation": {"matchConditionExpression": 'request.dryRun == false'}})
    assert patch_of(answer(the_admitter, review(pod("acr.io/a:1"))))
    assert not patch_of(answer(the_admitter, review(pod("acr.io/a:1"), dry_run=True)))


def test_if_available_decisions_are_never_kept() -> None:
    the_admitter, _ = admitter(policy="IfAvailable")
    answer(the_admitter, review(pod("acr.io/a:1")))
    assert the_admitter._decisions == {}


# -- one decoding pass answers as two do ---------------------------------------------------------

# the same decision as AOSM's default, but reading object.spec too: the two-step path
_DEFAULT = config.load(env={}).webhook.pod.mutation.match_condition_expression
_TWO_STEP = f"({_DEFAULT}) && (has(object.spec) || !has(object.spec))"

# the label maps and members the decision turns on (hypothesis combines them)
_label_maps = st.sampled_from([None, {}, {"app": "commissioning"}, {"app": "descheduler"},
                               {"name": "cert-exporter"}, {"app": "x", "tier": "y"},
                               {kinds.MUTATE_LABEL: "false"}, {"app": 1}])
_members = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["p", ""]) | st.none(),
    "generateName": st.just("upf-"),
    "namespace": st.sampled_from(["nf", "kube-system", "kube-system", "clusterregistry", ""]),
    "labels": _label_maps,
    "annotations": st.none() | st.just({kinds.ORIGINAL_IMAGES_ANNOTATION: "{}"}),
    "ownerReferences": st.just([{"kind": "ReplicaSet", "name": "upf-1", "controller": True}]),
})
_image_texts = ["acr.io/a:1", "nginx", "edge.local:5000/acr.io/a:1", "UPPER:x",
                "acr.io/b@sha256:" + "a" * 64]
_images: st.SearchStrategy[list[str]] = st.lists(
    st.sampled_from(_image_texts), min_size=1, max_size=3) | st.just([])


@st.composite
def _objects(draw: st.DrawFn) -> Any:
    obj: dict[str, Any] = {"kind": draw(st.sampled_from(["Pod", "Pod", "Service"]))}
    metadata = draw(st.one_of(_members, _members, _members, st.none(), st.just("not a map")))
    if metadata != {} or draw(st.booleans()):
        obj["metadata"] = metadata
    obj["spec"] = {"containers": [{"name": f"c{i}", "image": image}
                                  for i, image in enumerate(draw(_images))]}
    return draw(st.sampled_from([obj, obj, obj, None]))


_PAIRS = {
    # AOSM's default expression, one pass; the same decision reading the spec, two steps
    "default": ({}, {"pod": {"mutation": {"matchConditionExpression": _TWO_STEP}}}),
    # no expression, one pass; an expression that is always true, two steps
    "none": ({"enforceMatchCondition": False},
             {"pod": {"mutation": {"matchConditionExpression": "has(object.spec) || true"}}}),
}


@pytest.mark.parametrize("pair", sorted(_PAIRS))
@hypothesis.settings(max_examples=150)
@given(obj=_objects(), namespace=st.sampled_from(["nf", "kube-system", ""]),
       operation=st.sampled_from(["CREATE", "CREATE", "UPDATE"]))
def test_one_pass_answers_exactly_as_two_steps(pair: str, obj: Any, namespace: str,
                                               operation: str) -> None:
    one_pass, one_registry = admitter(**_PAIRS[pair][0])
    two_step, two_registry = admitter(**_PAIRS[pair][1])
    assert one_pass._one_pass and not two_step._one_pass  # what this test compares
    body = review(obj, namespace=namespace, operation=operation)
    assert _comparable(one_pass.review(body)) == _comparable(two_step.review(body))
    assert _counts(one_registry) == _counts(two_registry)


def _comparable(answer: tuple[int, bytes]) -> tuple[int, Any]:
    """The answer, with an expression's failure quoted up to where the two texts differ."""
    status, body = answer
    decoded = json.loads(body)
    response = decoded.get("response", {})
    response["warnings"] = [w.split(" resulted in error")[0].split(": expression")[0]
                            for w in response.get("warnings", [])]
    return status, decoded


def _counts(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample (outcomes, images rewritten and skipped by reason)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() if family.type == "counter"
            for sample in family.samples if sample.name.endswith("_total")}
