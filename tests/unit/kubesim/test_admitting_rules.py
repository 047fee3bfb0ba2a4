"""Which webhooks kubesim's mutating admission calls: rules, selectors, matchConditions.

Pure matching logic, no network: each case mirrors a decision kube-apiserver's
webhook predicates (rules, namespace, object, matchconditions) make.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy import celtypes
from celpy.evaluation import CELEvalError

from kubesim import statuses
from kubesim.admitting import (
    DEFAULT_USER,
    AdmissionAttributes,
    CelVariables,
    MutatingAdmission,
    Rule,
    Webhook,
    evaluate_match_conditions,
    match_variables,
    should_call,
    to_cel,
)
from kubesim.resources import Registry, Resource

REGISTRY = Registry()


def lookup(group: str, version: str, plural: str) -> Resource:
    resource = REGISTRY.lookup(group, version, plural)
    assert resource is not None
    return resource


PODS = lookup("", "v1", "pods")
NODES = lookup("", "v1", "nodes")
NAMESPACES = lookup("", "v1", "namespaces")
DEPLOYMENTS = lookup("apps", "v1", "deployments")
WEBHOOK_CONFIGS = lookup("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations")

# The matchConditions expression AOSM installs by default: everything outside
# kube-system goes to the webhook; inside it, only the commissioning, descheduler
# and cert-exporter pods do.
AOSM_DEFAULT = (
    "!(object.metadata.namespace == 'kube-system') || (has(object.metadata.labels) && "
    "((has(object.metadata.labels.app) && object.metadata.labels.app in "
    "['commissioning','descheduler']) || ('name' in object.metadata.labels && "
    "object.metadata.labels['name'] == 'cert-exporter')))"
)


def rule(**overrides: Any) -> Rule:
    spec: dict[str, Any] = {
        "operations": ["CREATE"],
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["pods"],
    }
    spec.update(overrides)
    return Rule.parse(spec)


def hook(**overrides: Any) -> Webhook:
    spec: dict[str, Any] = {
        "name": "hook.example.com",
        "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
        "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                   "resources": ["*/*"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    spec.update(overrides)
    return Webhook.parse("config", 0, spec)


def pod(
    *, namespace: str = "default", name: str = "web", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def attrs(
    obj: dict[str, Any] | None,
    *,
    resource: Resource = PODS,
    operation: str = "CREATE",
    subresource: str = "",
    namespace: str | None = None,
    old: dict[str, Any] | None = None,
) -> AdmissionAttributes:
    meta = (obj or old or {}).get("metadata", {})
    return AdmissionAttributes(
        resource=resource, subresource=subresource, operation=operation,
        namespace=meta.get("namespace", "") if namespace is None else namespace,
        name=meta.get("name", ""), obj=obj, old_obj=old, dry_run=False, user=DEFAULT_USER,
    )


NAMESPACE_LABELS = {
    "default": {"kubernetes.io/metadata.name": "default"},
    "team-a": {"kubernetes.io/metadata.name": "team-a", "team": "a"},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
}


def ns_labels(name: str) -> dict[str, str] | None:
    return NAMESPACE_LABELS.get(name)


# -- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "operation", "expected"),
    [
        ({}, "CREATE", True),
        ({}, "UPDATE", False),
        ({"operations": ["*"]}, "DELETE", True),
        ({"operations": ["UPDATE", "CREATE"]}, "UPDATE", True),
        ({"operations": []}, "CREATE", False),
    ],
)
def test_rule_operations(overrides: dict[str, Any], operation: str, expected: bool) -> None:
    assert rule(**overrides).matches(
        resource=PODS, subresource="", operation=operation, namespace="default"
    ) is expected


@pytest.mark.parametrize(
    ("overrides", "resource", "expected"),
    [
        ({}, PODS, True),
        ({}, DEPLOYMENTS, False),
        ({"apiGroups": ["apps"], "resources": ["deployments"]}, DEPLOYMENTS, True),
        ({"apiGroups": ["*"], "resources": ["deployments"]}, DEPLOYMENTS, True),
        ({"apiGroups": ["apps"], "apiVersions": ["v1beta1"], "resources": ["deployments"]},
         DEPLOYMENTS, False),
        ({"apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["deployments"]},
         DEPLOYMENTS, True),
    ],
)
def test_rule_groups_and_versions(
    overrides: dict[str, Any], resource: Resource, expected: bool
) -> None:
    assert rule(**overrides).matches(
        resource=resource, subresource="", operation="CREATE", namespace="default"
    ) is expected


@pytest.mark.parametrize(
    ("resources", "subresource", "expected"),
    [
        (["pods"], "", True),
        (["pods"], "status", False),
        (["pods"], "ephemeralcontainers", False),
        (["pods/ephemeralcontainers"], "ephemeralcontainers", True),
        (["pods/ephemeralcontainers"], "", False),
        (["pods/ephemeralcontainers"], "status", False),
        # "<resource>/*" is the resource and all its subresources
        (["pods/*"], "", True),
        (["pods/*"], "status", True),
        (["pods/*"], "ephemeralcontainers", True),
        # "*" is every resource but no subresource; "*/*" is everything
        (["*"], "", True),
        (["*"], "status", False),
        (["*/*"], "ephemeralcontainers", True),
        (["*/status"], "status", True),
        (["*/status"], "", False),
        (["deployments", "pods"], "", True),
        ([], "", False),
    ],
)
def test_rule_resources_and_subresources(
    resources: list[str], subresource: str, expected: bool
) -> None:
    assert rule(resources=resources, operations=["*"]).matches(
        resource=PODS, subresource=subresource, operation="UPDATE", namespace="default"
    ) is expected


@pytest.mark.parametrize(
    ("scope", "resource", "namespace", "expected"),
    [
        ("*", PODS, "default", True),
        ("*", NODES, "", True),
        ("Namespaced", PODS, "default", True),
        ("Namespaced", NODES, "", False),
        ("Cluster", PODS, "default", False),
        ("Cluster", NODES, "", True),
        # an update of a namespace carries its own name as namespace, yet is cluster-scoped
        ("Cluster", NAMESPACES, "team-a", True),
        ("Namespaced", NAMESPACES, "team-a", False),
        ("Bogus", PODS, "default", False),
    ],
)
def test_rule_scope(scope: str, resource: Resource, namespace: str, expected: bool) -> None:
    r = rule(scope=scope, apiGroups=["*"], resources=["*"])
    assert r.matches(
        resource=resource, subresource="", operation="CREATE", namespace=namespace
    ) is expected


def test_rule_scope_defaults_to_all() -> None:
    assert rule().scope == "*"


# -- webhook parsing -----------------------------------------------------------------------


def test_webhook_defaults_follow_admissionregistration_v1() -> None:
    h = Webhook.parse("cfg", 2, {"name": "x", "clientConfig": {"service": {
        "namespace": "webhooks", "name": "hook"}}})
    assert h.uid == ("cfg", 2)
    assert h.failure_policy == "Fail"
    assert h.timeout_seconds == 10
    assert h.reinvoke is False
    assert h.side_effects is None
    assert h.service == ("webhooks", "hook", 443, "")
    assert h.ca_bundle is None
    assert h.review_versions == ("v1",)
    assert h.namespace_selector is None and h.object_selector is None


def test_webhooks_are_ordered_by_configuration_name_then_position() -> None:
    def config(name: str, *hooks: str, rv: str = "1") -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": rv},
                "webhooks": [{"name": h} for h in hooks]}

    configs = [config("zeta", "z1"), config("alpha", "a1", "a2"), config("mid", "m1")]
    admission = MutatingAdmission(configurations=lambda: configs, namespace_labels=ns_labels)
    first = admission.webhooks()
    assert [h.name for h in first] == ["a1", "a2", "m1", "z1"]
    assert [h.uid for h in first] == [("alpha", 0), ("alpha", 1), ("mid", 0), ("zeta", 0)]
    # unchanged configurations are not parsed again
    assert admission.webhooks() is first
    configs[0] = config("zeta", "z1", "z2", rv="2")
    assert [h.name for h in admission.webhooks()] == ["a1", "a2", "m1", "z1", "z2"]


# -- namespaceSelector ---------------------------------------------------------------------


def test_namespace_selector_matches_the_namespace_labels() -> None:
    h = hook(namespaceSelector={"matchLabels": {"team": "a"}})
    assert should_call(h, attrs(pod(namespace="team-a")), namespace_labels=ns_labels)
    assert not should_call(h, attrs(pod(namespace="default")), namespace_labels=ns_labels)


def test_namespace_selector_match_expressions() -> None:
    h = hook(namespaceSelector={"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
    ]})
    assert should_call(h, attrs(pod(namespace="default")), namespace_labels=ns_labels)
    assert not should_call(h, attrs(pod(namespace="kube-system")), namespace_labels=ns_labels)


def test_empty_namespace_selector_selects_everything() -> None:
    h = hook(namespaceSelector={})
    assert should_call(h, attrs(pod(namespace="nowhere")), namespace_labels=ns_labels)


def test_cluster_scoped_objects_always_match_the_namespace_selector() -> None:
    h = hook(namespaceSelector={"matchLabels": {"team": "a"}})
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    assert should_call(h, attrs(node, resource=NODES), namespace_labels=ns_labels)


def test_a_namespace_is_matched_on_its_own_new_labels() -> None:
    h = hook(namespaceSelector={"matchLabels": {"team": "b"}})
    new_ns = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "team-b", "labels": {"team": "b"}}}
    # CREATE: the namespace is not stored yet, so only its own labels can decide
    assert should_call(h, attrs(new_ns, resource=NAMESPACES, namespace=""),
                       namespace_labels=ns_labels)
    # UPDATE: the new labels, not the stored ones ("team-a" is stored with team=a)
    relabelled = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "team-a", "labels": {"team": "b"}}}
    assert should_call(
        h, attrs(relabelled, resource=NAMESPACES, operation="UPDATE", namespace="team-a"),
        namespace_labels=ns_labels,
    )


def test_missing_namespace_is_not_found_only_when_the_rules_match() -> None:
    h = hook(namespaceSelector={"matchLabels": {"team": "a"}},
             rules=[{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                     "resources": ["pods"]}])
    with pytest.raises(statuses.ApiError) as err:
        should_call(h, attrs(pod(namespace="gone")), namespace_labels=ns_labels)
    assert err.value.code == 404
    assert err.value.message == 'namespaces "gone" not found'
    # an UPDATE is outside the rules: no error, the webhook simply does not apply
    assert not should_call(h, attrs(pod(namespace="gone"), operation="UPDATE"),
                           namespace_labels=ns_labels)


# -- objectSelector ------------------------------------------------------------------------


def test_object_selector_matches_new_or_old_labels() -> None:
    h = hook(objectSelector={"matchLabels": {"inject": "true"}})
    assert should_call(h, attrs(pod(labels={"inject": "true"})), namespace_labels=ns_labels)
    assert not should_call(h, attrs(pod(labels={"inject": "no"})), namespace_labels=ns_labels)
    assert not should_call(h, attrs(pod()), namespace_labels=ns_labels)
    # the label is being removed: the old object still selects the update
    assert should_call(
        h, attrs(pod(labels={}), operation="UPDATE", old=pod(labels={"inject": "true"})),
        namespace_labels=ns_labels,
    )


def test_object_selector_exists_operator() -> None:
    h = hook(objectSelector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]})
    assert should_call(h, attrs(pod(labels={"app": "x"})), namespace_labels=ns_labels)
    assert not should_call(h, attrs(pod(labels={"skip": ""})), namespace_labels=ns_labels)


# -- matchConditions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "labels", "expected"),
    [
        ("default", None, True),
        ("default", {"app": "descheduler"}, True),
        ("kube-system", None, False),
        ("kube-system", {"app": "coredns"}, False),
        ("kube-system", {"app": "commissioning"}, True),
        ("kube-system", {"app": "descheduler"}, True),
        ("kube-system", {"name": "cert-exporter"}, True),
        ("kube-system", {"name": "other"}, False),
    ],
)
def test_aosm_default_match_condition(
    namespace: str, labels: dict[str, str] | None, expected: bool
) -> None:
    h = hook(matchConditions=[{"name": "aosm-default", "expression": AOSM_DEFAULT}])
    assert should_call(
        h, attrs(pod(namespace=namespace, labels=labels)), namespace_labels=ns_labels
    ) is expected


def test_match_conditions_see_request_old_object_and_null_namespace_object() -> None:
    conditions = [
        ("op", "request.operation == 'CREATE'"),
        ("user", "request.userInfo.groups.exists(g, g == 'system:masters')"),
        ("gvr", "request.resource.resource == 'pods' && request.kind.kind == 'Pod'"),
        ("create", "oldObject == null"),
        ("ns", "namespaceObject == null"),
        ("images", "object.spec.containers.all(c, c.image.startsWith('nginx'))"),
    ]
    a = attrs(pod())
    assert evaluate_match_conditions(conditions, a.variables()).matches


def test_all_match_conditions_must_hold() -> None:
    h = hook(matchConditions=[
        {"name": "yes", "expression": "true"},
        {"name": "no", "expression": "object.metadata.name == 'other'"},
    ])
    assert not should_call(h, attrs(pod()), namespace_labels=ns_labels)


def test_a_false_condition_wins_over_an_error() -> None:
    result = evaluate_match_conditions(
        [("err", "object.metadata.missing == 'x'"), ("no", "false")], attrs(pod()).variables()
    )
    assert result.matches is False and result.error is None


def test_evaluation_error_fails_closed_with_failure_policy_fail() -> None:
    h = hook(matchConditions=[{"name": "e", "expression": "object.metadata.labels.app == 'x'"}])
    with pytest.raises(statuses.ApiError) as err:
        should_call(h, attrs(pod()), namespace_labels=ns_labels)
    assert err.value.code == 403
    assert err.value.reason == "Forbidden"
    assert err.value.message.startswith('pods "web" is forbidden: expression ')
    assert "resulted in error" in err.value.message


def test_evaluation_error_skips_the_webhook_with_failure_policy_ignore() -> None:
    h = hook(failurePolicy="Ignore",
             matchConditions=[{"name": "e", "expression": "object.metadata.labels.app == 'x'"}])
    assert not should_call(h, attrs(pod()), namespace_labels=ns_labels)


def test_forbidden_without_a_name_leaves_the_name_out() -> None:
    h = hook(matchConditions=[{"name": "e", "expression": "1 / 0 == 1"}])
    with pytest.raises(statuses.ApiError) as err:
        should_call(h, attrs(pod(name="")), namespace_labels=ns_labels)
    assert err.value.message.startswith("pods is forbidden: ")


@pytest.mark.parametrize("expression", ["object.metadata.(", "'not a bool'", "1 == 1.0"])
def test_uncompilable_non_bool_and_unsupported_expressions_are_errors(expression: str) -> None:
    result = evaluate_match_conditions([("c", expression)], attrs(pod()).variables())
    assert result.matches is False
    assert result.error


def test_several_errors_are_aggregated() -> None:
    result = evaluate_match_conditions(
        [("a", "object.nope"), ("b", "oldObject.metadata")], attrs(pod()).variables()
    )
    assert result.error is not None and result.error.startswith("[")


def test_match_conditions_are_evaluated_only_when_the_rules_match() -> None:
    h = hook(rules=[{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                     "resources": ["pods"]}],
             matchConditions=[{"name": "e", "expression": "1 / 0 == 1"}])
    assert not should_call(h, attrs(pod()), namespace_labels=ns_labels)


def test_to_cel_keeps_json_types_apart() -> None:
    variables = CelVariables({"v": {"b": True, "i": 1, "f": 1.5, "s": "x", "n": None,
                                    "l": [1, "a"]}})
    result = evaluate_match_conditions(
        [("types", "type(v.b) == bool && type(v.i) == int && type(v.f) == double && "
                   "type(v.s) == string && v.n == null && size(v.l) == 2")],
        variables,
    )
    assert result == (True, None)
    assert to_cel({"a": [1]}) == {"a": [1]}
    with pytest.raises(TypeError):
        to_cel(object())


# -- admit without any network -------------------------------------------------------------


async def test_admission_of_webhook_configurations_is_exempt() -> None:
    configs = [{"metadata": {"name": "c"}, "webhooks": [
        {"name": "h", "clientConfig": {"url": "https://127.0.0.1:1/"}, "sideEffects": "None",
         "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                    "resources": ["*/*"]}]}]}]
    admission = MutatingAdmission(configurations=lambda: configs, namespace_labels=ns_labels)
    try:
        obj = {"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "MutatingWebhookConfiguration", "metadata": {"name": "x"}}
        out = await admission.admit(resource=WEBHOOK_CONFIGS, subresource="",
                                    operation="CREATE", obj=obj, old_obj=None, namespace=None,
                                    name="x", dry_run=False)
        assert out is obj
    finally:
        await admission.close()


async def test_dry_run_is_refused_before_calling_a_webhook_with_side_effects() -> None:
    configs = [{"metadata": {"name": "c"}, "webhooks": [
        {"name": "some.example.com", "clientConfig": {"url": "https://127.0.0.1:1/"},
         "sideEffects": "Some", "failurePolicy": "Ignore",
         "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                    "resources": ["*/*"]}]}]}]
    admission = MutatingAdmission(configurations=lambda: configs, namespace_labels=ns_labels)
    try:
        with pytest.raises(statuses.ApiError) as err:
            await admission.admit(resource=PODS, subresource="", operation="CREATE", obj=pod(),
                                  old_obj=None, namespace="default", name="web", dry_run=True)
        assert err.value.code == 400
        assert err.value.reason == "BadRequest"
        assert err.value.message == 'admission webhook "some.example.com" does not support dry run'
    finally:
        await admission.close()


async def test_no_matching_webhook_returns_the_object_itself() -> None:
    configs = [{"metadata": {"name": "c"}, "webhooks": [
        {"name": "h", "clientConfig": {"url": "https://127.0.0.1:1/"}, "sideEffects": "None",
         "rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"],
                    "resources": ["pods"]}]}]}]
    admission = MutatingAdmission(configurations=lambda: configs, namespace_labels=ns_labels)
    try:
        obj = pod()
        out = await admission.admit(resource=PODS, subresource="", operation="CREATE", obj=obj,
                                    old_obj=None, namespace="default", name="web", dry_run=False)
        assert out is obj
    finally:
        await admission.close()


# -- result caching ------------------------------------------------------------------------

_DIRECT_ENV = celpy.Environment()


def direct(expression: str, raw: dict[str, Any]) -> bool | None:
    """celpy's own verdict, without kubesim's caches: True, False or None for an error."""
    try:
        result = _DIRECT_ENV.program(_DIRECT_ENV.compile(expression)).evaluate(
            {k: to_cel(v) for k, v in raw.items()})
    except CELEvalError:
        return None
    return bool(result) if isinstance(result, celtypes.BoolType) else None


@pytest.mark.parametrize(
    "expression",
    [
        AOSM_DEFAULT,
        "has(object.metadata.labels.app)",
        "object.metadata.labels.app == 'x'",
        "object.spec.containers.all(c, c.image.startsWith('nginx'))",
        # a macro variable shadowing a root variable
        "object.spec.containers.exists(object, object.image == 'redis')",
        "object.metadata.labels[request.name] == 'x'",
        ".object.metadata.name == 'web'",
        "object == null || size(object.metadata) > 1",
    ],
)
def test_cached_results_equal_direct_evaluation(expression: str) -> None:
    metas: list[dict[str, Any]] = [
        {"name": "web", "namespace": "default"},
        {"name": "web", "namespace": "kube-system"},
        {"name": "app", "namespace": "kube-system", "labels": {}},
        {"name": "x", "namespace": "kube-system", "labels": {"app": "x"}},
        {"name": "web", "namespace": "kube-system", "labels": {"app": "descheduler"}},
        {"name": "web", "namespace": "kube-system", "labels": {"name": "cert-exporter"}},
        {"name": "web", "namespace": "kube-system", "labels": {"web": "x"}},
        {"name": "web", "namespace": "kube-system", "labels": "not a map"},
        {"name": "other", "namespace": "default", "labels": {"app": "x"}},
    ]
    images = ["nginx:1", "redis:7"]
    objects: list[dict[str, Any] | None] = [None]
    for meta in metas:
        for image in images:
            objects.append({"metadata": meta, "spec": {"containers": [
                {"name": "c", "image": image}]}})
    # twice over, interleaved, so that later rounds are answered from the cache
    for _ in range(2):
        for obj in objects:
            request = {"name": (obj or {}).get("metadata", {}).get("name", "")}
            variables = match_variables(obj=obj, old_obj=None, request=request)
            result = evaluate_match_conditions([("c", expression)], variables)
            expected = direct(expression, dict(variables.raw))
            if expected is None:
                assert result.error is not None, (obj, result)
            else:
                assert result == (expected, None), obj
