"""kubesim.validation: kube-apiserver's validation, defaulting and CR schema handling.

The expected messages are kube's own (k8s.io/apimachinery field errors as
rendered since 1.34), because clients and operators match on them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubesim import statuses, validation
from kubesim.resources import BUILTIN, Resource, from_crd

R = {r.kind: r for r in BUILTIN}
Obj = dict[str, Any]

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def causes_of(error: statuses.ApiError) -> list[str]:
    """'field: message' of each cause, in order."""
    assert error.code == 422, error.message
    assert error.details is not None
    return [f"{c['field']}: {c['message']}" for c in error.details["causes"]]


def create_errors(kind: str, obj: Obj, *, defaults: bool = True) -> list[str]:
    resource = R[kind]
    if defaults:
        validation.apply_defaults(resource, obj)
    try:
        validation.validate_create(resource, obj)
    except statuses.ApiError as exc:
        return causes_of(exc)
    return []


def update_errors(kind: str, old: Obj, new: Obj) -> list[str]:
    resource = R[kind]
    validation.apply_defaults(resource, new)
    try:
        validation.validate_update(resource, old, new)
    except statuses.ApiError as exc:
        return causes_of(exc)
    return []


def meta(name: str = "x", namespace: str | None = "default", **extra: Any) -> Obj:
    out: Obj = {"name": name, **extra}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def pod(**spec: Any) -> Obj:
    spec.setdefault("containers", [{"name": "app", "image": "nginx:1.25"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta("web"), "spec": spec}


def template(labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    spec.setdefault("containers", [{"name": "app", "image": "nginx:1.25"}])
    return {"metadata": {"labels": {"app": "web"} if labels is None else labels}, "spec": spec}


def deployment(**spec: Any) -> Obj:
    spec.setdefault("selector", {"matchLabels": {"app": "web"}})
    spec.setdefault("template", template())
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"), "spec": spec}


def created(kind: str, obj: Obj) -> Obj:
    """obj defaulted and validated, as the apiserver stores it."""
    assert create_errors(kind, obj) == []
    return obj


# --- errors as kube renders them ------------------------------------------------------------

def test_invalid_is_422_with_kube_causes() -> None:
    obj = pod()
    obj["metadata"]["name"] = "Foo"
    with pytest.raises(statuses.ApiError) as info:
        validation.validate_create(R["Pod"], obj)
    error = info.value
    assert (error.code, error.reason) == (422, "Invalid")
    assert error.details is not None
    assert error.details["kind"] == "Pod" and error.details["name"] == "Foo"
    assert error.details["causes"] == [{
        "reason": "FieldValueInvalid",
        "field": "metadata.name",
        "message": f'Invalid value: "Foo": {SUBDOMAIN_MSG}',
    }]


def test_a_value_of_the_wrong_json_type_is_a_400_like_kube_decoding() -> None:
    obj = pod()
    obj["metadata"]["name"] = 5
    with pytest.raises(statuses.ApiError) as info:
        validation.validate_create(R["Pod"], obj)
    assert info.value.code == 400
    assert 'Pod in version "v1" cannot be handled as a Pod' in info.value.message
    assert "cannot unmarshal number" in info.value.message


def test_non_scalar_bad_values_are_rendered_as_json() -> None:
    obj = deployment(template=template({"tier": "db", "app": "api"}))
    assert create_errors("Deployment", obj) == [
        'spec.template.metadata.labels: Invalid value: {"app":"api","tier":"db"}: '
        "`selector` does not match template `labels`"
    ]
    obj = pod(imagePullSecrets=[{"name": "a&b", "key": "<x>"}])
    assert create_errors("Pod", obj) == [
        'spec.imagePullSecrets[0]: Invalid value: {"key":"\\u003cx\\u003e","name":"a\\u0026b"}: '
        "only name may be set"
    ]


# --- object metadata ---------------------------------------------------------------------------

def test_name_or_generate_name_is_required() -> None:
    obj = pod()
    del obj["metadata"]["name"]
    assert create_errors("Pod", obj) == [
        "metadata.name: Required value: name or generateName is required"
    ]
    obj["metadata"]["generateName"] = "web-"
    assert create_errors("Pod", obj) == []


def test_generate_name_may_end_with_a_dash_but_is_otherwise_a_subdomain() -> None:
    obj = pod()
    obj["metadata"] = {"generateName": "Web-", "namespace": "default"}
    errors = create_errors("Pod", obj)
    assert errors == [f'metadata.generateName: Invalid value: "Web-": {SUBDOMAIN_MSG}']


def test_names_longer_than_a_subdomain_are_rejected() -> None:
    obj = pod()
    obj["metadata"]["name"] = "a" * 254
    assert create_errors("Pod", obj) == [
        f'metadata.name: Invalid value: "{"a" * 254}": must be no more than 253 characters'
    ]


def test_namespace_names_are_dns_labels() -> None:
    ns: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert create_errors("Namespace", ns) == [
        'metadata.name: Invalid value: "team.a": must not contain dots'
    ]
    ok: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    assert create_errors("Namespace", ok) == []
    assert ok["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert ok["status"] == {"phase": "Active"}


def test_namespaced_objects_need_a_valid_namespace_and_cluster_objects_none() -> None:
    obj = pod()
    obj["metadata"]["namespace"] = "Team_A"
    (error,) = create_errors("Pod", obj)
    assert error.startswith('metadata.namespace: Invalid value: "Team_A": a lowercase RFC 1123 '
                            "label must consist of")
    del obj["metadata"]["namespace"]
    assert create_errors("Pod", obj) == ["metadata.namespace: Required value"]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": meta("n1", "default")}
    assert create_errors("Node", node) == [
        "metadata.namespace: Forbidden: not allowed on this type"
    ]


def test_label_keys_and_values() -> None:
    obj = pod()
    obj["metadata"]["labels"] = {"-bad": "ok", "good": "-bad", "example.com/ok": "v" * 64}
    errors = create_errors("Pod", obj)
    assert errors[0] == (
        'metadata.labels: Invalid value: "-bad": name part must consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    )
    assert errors[1].startswith('metadata.labels: Invalid value: "-bad": a valid label must be '
                                "an empty string or consist of alphanumeric characters")
    assert errors[2] == f'metadata.labels: Invalid value: "{"v" * 64}": must be no more than ' \
                        "63 characters"
    assert len(errors) == 3


def test_annotations_keys_ignore_case_and_their_total_size_is_limited() -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {"Example.COM/Key": "x"}
    assert create_errors("Pod", obj) == []
    obj["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    assert create_errors("Pod", obj) == [
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    ]


def test_owner_references_need_their_fields_and_at_most_one_controller() -> None:
    obj = pod()
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1",
         "controller": True},
        {"apiVersion": "", "kind": "", "name": "", "uid": ""},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2",
         "controller": True},
    ]
    errors = create_errors("Pod", obj)
    assert errors[:4] == [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.kind: Invalid value: "": must not be empty',
        'metadata.ownerReferences.name: Invalid value: "": must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": must not be empty',
    ]
    assert errors[4].startswith("metadata.ownerReferences: Invalid value: [")
    assert errors[4].endswith(': Only one reference can have Controller set to true. Found '
                              '"true" in references for ReplicaSet/a and ReplicaSet/b')


def test_finalizers_must_be_qualified_and_core_kinds_fully_qualified() -> None:
    obj = pod()
    obj["metadata"]["finalizers"] = ["example.com/cleanup", "kubernetes", "cleanup"]
    assert create_errors("Pod", obj) == [
        'metadata.finalizers[2]: Invalid value: "cleanup": name is neither a standard '
        "finalizer name nor is it fully qualified"
    ]
    hook = webhook_configuration()
    hook["metadata"]["finalizers"] = ["cleanup", "-bad"]
    errors = create_errors("MutatingWebhookConfiguration", hook)
    assert len(errors) == 1 and errors[0].startswith('metadata.finalizers: Invalid value: "-bad"')


# --- pods ------------------------------------------------------------------------------------

def test_containers_are_required() -> None:
    obj = pod(containers=[])
    assert create_errors("Pod", obj) == ["spec.containers: Required value"]


def test_container_names_and_images() -> None:
    obj = pod(
        containers=[{"name": "app", "image": "a"}, {"name": "App", "image": ""}],
        initContainers=[{"name": "app", "image": "b"}],
        ephemeralContainers=[{"name": "app", "image": "c", "targetContainerName": "nope"}],
    )
    errors = create_errors("Pod", obj)
    assert errors[0].startswith('spec.containers[1].name: Invalid value: "App": a lowercase '
                                "RFC 1123 label")
    assert errors[1:] == [
        "spec.containers[1].image: Required value",
        'spec.initContainers[0].name: Duplicate value: "app"',
        'spec.ephemeralContainers[0].name: Duplicate value: "app"',
        'spec.ephemeralContainers[0].targetContainerName: Not found: "nope"',
    ]


def test_pod_enums_list_kube_supported_values() -> None:
    obj = pod(restartPolicy="Sometimes", dnsPolicy="Nearest")
    obj["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    assert create_errors("Pod", obj) == [
        'spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported '
        'values: "Always", "IfNotPresent", "Never"',
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", '
        '"OnFailure", "Never"',
        'spec.dnsPolicy: Unsupported value: "Nearest": supported values: '
        '"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"',
    ]


def test_container_ports() -> None:
    obj = pod(containers=[{"name": "app", "image": "a", "ports": [
        {"name": "http", "containerPort": 80},
        {"name": "http", "containerPort": 70000, "protocol": "HTTP"},
        {"hostPort": 8080},
    ]}])
    assert create_errors("Pod", obj) == [
        'spec.containers[0].ports[1].name: Duplicate value: "http"',
        "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 "
        "and 65535, inclusive",
        'spec.containers[0].ports[1].protocol: Unsupported value: "HTTP": supported values: '
        '"SCTP", "TCP", "UDP"',
        "spec.containers[0].ports[2].containerPort: Required value",
    ]


def test_host_ports_may_not_collide_across_containers() -> None:
    port = {"containerPort": 80, "hostPort": 8080}
    obj = pod(containers=[{"name": "a", "image": "a", "ports": [dict(port)]},
                          {"name": "b", "image": "b", "ports": [dict(port)]}])
    assert create_errors("Pod", obj) == [
        'spec.containers[1].ports[0].hostPort: Duplicate value: "TCP//8080"'
    ]


def test_image_pull_secrets_may_only_name_a_secret() -> None:
    obj = pod(imagePullSecrets=[{"name": "regcred"}, {"name": "x", "namespace": "y"}])
    assert create_errors("Pod", obj) == [
        'spec.imagePullSecrets[1]: Invalid value: {"name":"x","namespace":"y"}: only name may '
        "be set"
    ]


def test_volumes_and_mounts() -> None:
    obj = pod(
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "data", "configMap": {"name": "c"}},
                 {"name": "both", "emptyDir": {}, "secret": {"secretName": "s"}}],
        containers=[{"name": "app", "image": "a", "volumeMounts": [
            {"name": "data", "mountPath": "/d"}, {"name": "cache", "mountPath": "/d"}]}],
    )
    assert create_errors("Pod", obj) == [
        'spec.volumes[1].name: Duplicate value: "data"',
        "spec.volumes[2].secret: Forbidden: may not specify more than 1 volume type",
        'spec.containers[0].volumeMounts[1].name: Not found: "cache"',
        'spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/d": must be unique',
    ]


def test_a_volume_without_a_source_becomes_an_empty_dir() -> None:
    obj = created("Pod", pod(volumes=[{"name": "scratch"}]))
    assert obj["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}]


def test_requests_may_not_exceed_limits_and_quantities_must_parse() -> None:
    obj = pod(containers=[{"name": "app", "image": "a", "resources": {
        "requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}}])
    assert create_errors("Pod", obj) == [
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal '
        "to cpu limit of 1500m"
    ]
    bad = pod(containers=[{"name": "app", "image": "a", "resources": {"limits": {"cpu": "lots"}}}])
    with pytest.raises(statuses.ApiError) as info:
        validation.validate_create(R["Pod"], bad)
    assert info.value.code == 400
    assert info.value.message == (
        'Pod in version "v1" cannot be handled as a Pod: quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


def test_pod_defaults() -> None:
    obj = created("Pod", pod(containers=[{"name": "app", "image": "nginx",
                                          "ports": [{"containerPort": 80}]}]))
    spec = obj["spec"]
    assert {k: spec[k] for k in ("restartPolicy", "dnsPolicy", "schedulerName",
                                 "terminationGracePeriodSeconds", "serviceAccountName",
                                 "securityContext", "enableServiceLinks")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30,
        "serviceAccountName": "default", "securityContext": {}, "enableServiceLinks": True,
    }
    assert spec["containers"][0] == {
        "name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "Always", "resources": {},
    }
    assert obj["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_defaults_are_idempotent_and_keep_what_was_set() -> None:
    obj = pod(restartPolicy="Never", terminationGracePeriodSeconds=0)
    validation.apply_defaults(R["Pod"], obj)
    once = copy.deepcopy(obj)
    validation.apply_defaults(R["Pod"], obj)
    assert obj == once
    assert obj["spec"]["restartPolicy"] == "Never"
    assert obj["spec"]["terminationGracePeriodSeconds"] == 0


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/app", "Always"),
    ("registry.local:5000/team/app:v2", "IfNotPresent"),
    ("localhost:5000/app", "Always"),
    ("app@sha256:" + "a" * 64, "IfNotPresent"),
    ("app:latest@sha256:" + "a" * 64, "Always"),
    ("[::1]:5000/app:1.0", "IfNotPresent"),
    ("Not A Reference", "IfNotPresent"),
])
def test_image_pull_policy_default_parses_the_reference(image: str, policy: str) -> None:
    obj = pod(containers=[{"name": "app", "image": image}])
    validation.apply_defaults(R["Pod"], obj)
    assert obj["spec"]["containers"][0]["imagePullPolicy"] == policy


@pytest.mark.parametrize(("resources", "qos"), [
    ([{}], "BestEffort"),
    ([{"requests": {"cpu": "100m"}}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m",
                                                            "memory": "1024Mi"}}],
     "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
])
def test_qos_class_of_a_new_pod(resources: list[Obj], qos: str) -> None:
    containers = [{"name": f"c{i}", "image": "a", "resources": r}
                  for i, r in enumerate(resources)]
    obj = created("Pod", pod(containers=containers))
    assert obj["status"]["qosClass"] == qos


def test_requests_default_to_limits_for_pods_only() -> None:
    obj = created("Pod", pod(containers=[{"name": "a", "image": "a",
                                          "resources": {"limits": {"memory": "1Gi"}}}]))
    assert obj["spec"]["containers"][0]["resources"]["requests"] == {"memory": "1Gi"}
    dep = created("Deployment", deployment(template=template(containers=[
        {"name": "a", "image": "a", "resources": {"limits": {"memory": "1Gi"}}}])))
    assert "requests" not in dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert "enableServiceLinks" not in dep["spec"]["template"]["spec"]


def test_pod_update_may_change_images_only() -> None:
    old = created("Pod", pod())
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.26"
    new["metadata"]["labels"] = {"changed": "yes"}
    assert update_errors("Pod", old, new) == []
    new["spec"]["restartPolicy"] = "Never"
    (error,) = update_errors("Pod", old, new)
    assert error.startswith(
        "spec: Forbidden: pod updates may not change fields other than "
        "`spec.containers[*].image`,`spec.initContainers[*].image`,"
        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
        "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\n"
    )
    assert '- \tRestartPolicy: "Always",' in error and '+ \tRestartPolicy: "Never",' in error


def test_pod_update_may_not_add_containers_or_raise_deadlines() -> None:
    old = created("Pod", pod(activeDeadlineSeconds=60))
    new = copy.deepcopy(old)
    new["spec"]["containers"].append({"name": "b", "image": "b"})
    assert update_errors("Pod", old, new) == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ]
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 120
    assert update_errors("Pod", old, new) == [
        "spec.activeDeadlineSeconds: Invalid value: 120: must be less than or equal to "
        "previous value"
    ]
    new["spec"]["activeDeadlineSeconds"] = 30
    assert update_errors("Pod", old, new) == []


def test_pod_update_may_add_tolerations_but_not_change_them() -> None:
    toleration = {"key": "k", "operator": "Exists", "effect": "NoExecute",
                  "tolerationSeconds": 60}
    old = created("Pod", pod(tolerations=[toleration]))
    new = copy.deepcopy(old)
    new["spec"]["tolerations"][0]["tolerationSeconds"] = 30
    new["spec"]["tolerations"].append({"key": "other", "operator": "Exists"})
    assert update_errors("Pod", old, new) == []
    new["spec"]["tolerations"][0]["key"] = "changed"
    assert "spec.tolerations: Forbidden: existing toleration can not be modified except its " \
           "tolerationSeconds" in update_errors("Pod", old, new)


def test_metadata_identity_is_immutable() -> None:
    old = created("Pod", pod())
    old["metadata"].update(uid="u1", creationTimestamp="2024-01-01T00:00:00Z")
    new = copy.deepcopy(old)
    new["metadata"].update(name="other", uid="u2")
    assert update_errors("Pod", old, new) == [
        'metadata.name: Invalid value: "other": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
    ]
    new = copy.deepcopy(old)
    del new["metadata"]["uid"]  # the apiserver fills it from the stored object
    assert update_errors("Pod", old, new) == []


def test_no_new_finalizers_while_deleting() -> None:
    old = created("Pod", pod())
    old["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["example.com/hold"]
    assert update_errors("Pod", old, new) == [
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
        'deleted, found new finalizers []string{"example.com/hold"}'
    ]


# --- apps/v1 ---------------------------------------------------------------------------------

def test_deployment_defaults() -> None:
    obj = created("Deployment", deployment())
    spec = obj["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_deployment_selector_is_required_and_must_match() -> None:
    obj = deployment()
    del obj["spec"]["selector"]
    assert create_errors("Deployment", obj) == [
        "spec.selector: Required value",
        'spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not '
        "match template `labels`",
    ]
    obj = deployment(selector={})
    assert create_errors("Deployment", obj) == [
        "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
    ]
    obj = deployment(selector={"matchExpressions": [{"key": "app", "operator": "In",
                                                     "values": ["web", "api"]}]})
    assert create_errors("Deployment", obj) == []


def test_deployment_spec_checks() -> None:
    obj = deployment(replicas=-1, template=template(restartPolicy="Never"),
                     strategy={"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}})
    assert create_errors("Deployment", obj) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: '
        '"Always"',
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when "
        "`maxSurge` is 0",
    ]


def test_deployment_template_is_validated_as_a_pod_spec() -> None:
    obj = deployment(template=template(containers=[{"name": "app"}]))
    obj["spec"]["template"]["metadata"]["labels"]["bad key"] = "x"
    errors = create_errors("Deployment", obj)
    assert errors[0].startswith('spec.template.labels: Invalid value: "bad key"')
    assert "spec.template.spec.containers[0].image: Required value" in errors


def test_workload_selectors_are_immutable() -> None:
    old = created("Deployment", deployment())
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    assert update_errors("Deployment", old, new) == []
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    assert update_errors("Deployment", old, new) == [
        'spec.selector: Invalid value: {"matchLabels":{"app":"web","tier":"x"}}: field is '
        "immutable"
    ]


def test_replicaset_and_daemonset() -> None:
    rs = created("ReplicaSet", {"metadata": meta("web"), "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert rs["spec"]["replicas"] == 1
    ds = created("DaemonSet", {"metadata": meta("agent"), "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["revisionHistoryLimit"] == 10
    bad = {"metadata": meta("agent"), "spec": {
        "selector": {"matchLabels": {"app": "other"}}, "template": template(),
        "updateStrategy": {"type": "Sometimes"}}}
    assert create_errors("DaemonSet", bad) == [
        'spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not '
        "match template `labels`",
        'spec.updateStrategy: Unsupported value: {"type":"Sometimes"}: supported values: '
        '"RollingUpdate", "OnDelete"',
    ]


def statefulset(**spec: Any) -> Obj:
    spec.setdefault("selector", {"matchLabels": {"app": "web"}})
    spec.setdefault("template", template(containers=[{
        "name": "db", "image": "postgres", "volumeMounts": [{"name": "data",
                                                             "mountPath": "/var/lib"}]}]))
    spec.setdefault("volumeClaimTemplates", [{"metadata": {"name": "data"}, "spec": {}}])
    return {"metadata": meta("db"), "spec": {"serviceName": "db", **spec}}


def test_statefulset_defaults_and_claim_template_mounts() -> None:
    obj = created("StatefulSet", statefulset())
    spec = obj["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10


def test_statefulset_updates_are_limited() -> None:
    old = created("StatefulSet", statefulset())
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 3
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "postgres:17"
    assert update_errors("StatefulSet", old, new) == []
    new["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] = "other"
    assert update_errors("StatefulSet", old, new)[-1] == (
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', "
        "'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', "
        "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
    )


# --- batch/v1 --------------------------------------------------------------------------------

def job(**spec: Any) -> Obj:
    spec.setdefault("template", template(restartPolicy="Never"))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("migrate"), "spec": spec}


def test_job_defaults() -> None:
    obj = created("Job", job())
    spec = obj["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert obj["metadata"]["labels"] == {"app": "web"}  # from the template
    parallel = created("Job", job(parallelism=3))
    assert "completions" not in parallel["spec"]


def test_job_pods_may_not_restart_always() -> None:
    # the pod defaulter makes the absent restartPolicy Always, which Jobs reject
    assert create_errors("Job", job(template=template())) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: '
        '"OnFailure", "Never"'
    ]


def test_job_counts_are_not_negative() -> None:
    assert create_errors("Job", job(parallelism=-1, backoffLimit=-2)) == [
        "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
        "spec.backoffLimit: Invalid value: -2: must be greater than or equal to 0",
    ]


def test_job_selector_is_generated_from_the_uid_on_create() -> None:
    obj = job()
    obj["metadata"]["uid"] = "1234"
    created("Job", obj)
    assert obj["spec"]["selector"] == {
        "matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == "migrate"
    assert labels["controller-uid"] == "1234"


def test_job_selector_and_template_are_immutable() -> None:
    old = job()
    old["metadata"]["uid"] = "1234"
    created("Job", old)
    old["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    assert update_errors("Job", old, new) == []
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    new["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    errors = update_errors("Job", old, new)
    assert errors[0] == ('spec.selector: Invalid value: {"matchLabels":{"app":"web"}}: field '
                         "is immutable")
    assert errors[1].startswith("spec.template: Invalid value: {")
    assert errors[1].endswith("}: field is immutable")


def cronjob(schedule: str = "*/5 * * * *", **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("nightly"),
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {
                "template": template(restartPolicy="OnFailure")}}, **spec}}


def test_cronjob_defaults() -> None:
    spec = created("CronJob", cronjob())["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)


@pytest.mark.parametrize(("schedule", "error"), [
    ("", "spec.schedule: Required value"),
    ("* * * *", 'spec.schedule: Invalid value: "* * * *": expected exactly 5 fields, found 4: '
                "[* * * *]"),
    ("61 * * * *", 'spec.schedule: Invalid value: "61 * * * *": end of range (61) above '
                   "maximum (59): 61"),
    ("@sometimes", 'spec.schedule: Invalid value: "@sometimes": unrecognized descriptor: '
                   "@sometimes"),
])
def test_cronjob_schedule(schedule: str, error: str) -> None:
    assert create_errors("CronJob", cronjob(schedule)) == [error]


@pytest.mark.parametrize("schedule", ["@hourly", "0 3 * * mon-fri", "*/15 0-6 1,15 jan *",
                                      "@every 1h30m"])
def test_valid_cron_schedules(schedule: str) -> None:
    assert create_errors("CronJob", cronjob(schedule)) == []


def test_cronjob_names_leave_room_for_job_suffixes() -> None:
    obj = cronjob()
    obj["metadata"]["name"] = "n" * 53
    assert create_errors("CronJob", obj) == [
        f'metadata.name: Invalid value: "{"n" * 53}": must be no more than 52 characters'
    ]


# --- admissionregistration.k8s.io/v1 ---------------------------------------------------------

def webhook(**hook: Any) -> Obj:
    base: Obj = {
        "name": "registry.example.com",
        "clientConfig": {"service": {"name": "hook", "namespace": "infra", "path": "/mutate"}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    base.update(hook)
    return base


def webhook_configuration(*hooks: Obj) -> Obj:
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": meta("registry", None),
            "webhooks": list(hooks) or [webhook()]}


def test_webhook_defaults() -> None:
    obj = created("MutatingWebhookConfiguration", webhook_configuration())
    hook = obj["webhooks"][0]
    assert {k: hook[k] for k in ("failurePolicy", "matchPolicy", "namespaceSelector",
                                 "objectSelector", "timeoutSeconds", "reinvocationPolicy")} == {
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {},
        "objectSelector": {}, "timeoutSeconds": 10, "reinvocationPolicy": "Never"}
    assert hook["rules"][0]["scope"] == "*"
    assert hook["clientConfig"]["service"]["port"] == 443


def test_webhook_names_and_client_config() -> None:
    obj = webhook_configuration(
        webhook(name="registry"),
        webhook(clientConfig={"url": "http://hook.example.com/x?y=1",
                              "service": {"name": "a", "namespace": "b"}}),
        webhook(clientConfig={"url": "http://hook.example.com/x?y=1"}),
    )
    assert create_errors("MutatingWebhookConfiguration", obj) == [
        'webhooks[0].name: Invalid value: "registry": should be a domain with at least three '
        "segments separated by dots",
        "webhooks[1].clientConfig: Required value: exactly one of url or service is required",
        'webhooks[2].clientConfig.url: Invalid value: "http": \'https\' is the only allowed URL '
        "scheme; desired format: https://host[/path]",
        'webhooks[2].clientConfig.url: Invalid value: "y=1": query parameters are not '
        "permitted in the URL",
        'webhooks[2].name: Duplicate value: "registry.example.com"',
    ]


def test_webhook_policies_and_versions() -> None:
    hook = webhook(failurePolicy="Retry", sideEffects="Some", timeoutSeconds=31,
                   reinvocationPolicy="Always", admissionReviewVersions=[])
    errors = create_errors("MutatingWebhookConfiguration", webhook_configuration(hook))
    assert errors == [
        'webhooks[0].failurePolicy: Unsupported value: "Retry": supported values: "Fail", '
        '"Ignore"',
        'webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", '
        '"NoneOnDryRun"',
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 "
        "and 30 seconds",
        'webhooks[0].reinvocationPolicy: Unsupported value: "Always": supported values: '
        '"IfNeeded", "Never"',
        "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
    ]
    hook = webhook()
    del hook["sideEffects"]
    assert create_errors("MutatingWebhookConfiguration", webhook_configuration(hook)) == [
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"
    ]


def test_webhook_match_conditions() -> None:
    hook = webhook(matchConditions=[
        {"name": "not-system", "expression": "true"},
        {"name": "not-system", "expression": "  "},
    ])
    assert create_errors("MutatingWebhookConfiguration", webhook_configuration(hook)) == [
        "webhooks[0].matchConditions[1].expression: Required value",
        'webhooks[0].matchConditions[1].name: Duplicate value: "not-system"',
    ]


def test_webhook_service_checks_mirror_kubes_swapped_arguments() -> None:
    hook = webhook(clientConfig={"service": {"name": "hook"}})
    assert create_errors("MutatingWebhookConfiguration", webhook_configuration(hook)) == [
        "webhooks[0].clientConfig.service.name: Required value"
    ]


# --- apiextensions.k8s.io/v1 -------------------------------------------------------------------

WIDGET_SCHEMA: Obj = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["sourceArtifact"],
            "properties": {
                "sourceArtifact": {"type": "string", "pattern": "^[a-z]+:"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["fast", "safe"]},
                "port": {"x-kubernetes-int-or-string": True},
                "owner": {"type": "string", "maxLength": 5},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"},
                         "x-kubernetes-list-type": "set"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "when": {"type": "string", "format": "date-time"},
                "count32": {"type": "integer", "format": "int32"},
                "note": {"type": "string", "nullable": True},
                "settings": {"type": "object", "default": {},
                             "properties": {"level": {"type": "string", "default": "info"}}},
                "endpoints": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"host": {"type": "string"},
                                   "port": {"type": "integer", "default": 443}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
                "choice": {"type": "string", "anyOf": [{"enum": ["a"]}, {"pattern": "^x"}]},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def crd(schema: Obj | None = None, **spec: Any) -> Obj:
    version = {"name": "v1", "served": True, "storage": True,
               "schema": {"openAPIV3Schema": WIDGET_SCHEMA if schema is None else schema}}
    base: Obj = {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"}, "versions": [version],
    }
    base.update(spec)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": meta("widgets.example.com", None), "spec": base}


def widget_resource() -> Resource:
    return from_crd(created("CustomResourceDefinition", crd()))[0]


def widget(**spec: Any) -> Obj:
    spec.setdefault("sourceArtifact", "oci:registry/app")
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w"),
            "spec": spec}


def custom_errors(obj: Obj) -> list[str]:
    resource = widget_resource()
    try:
        validation.validate_custom(resource, obj)
    except statuses.ApiError as exc:
        return causes_of(exc)
    return []


def test_crd_defaults() -> None:
    obj = created("CustomResourceDefinition", crd())
    assert obj["spec"]["names"] == {"plural": "widgets", "kind": "Widget",
                                    "singular": "widget", "listKind": "WidgetList"}
    assert obj["spec"]["conversion"] == {"strategy": "None"}


def test_crd_name_group_scope_and_versions() -> None:
    obj = crd(group="example", scope="Global")
    obj["metadata"]["name"] = "widgets.example.com"
    obj["spec"]["versions"][0]["storage"] = False
    obj["spec"]["names"]["kind"] = "Widget_Thing"
    errors = create_errors("CustomResourceDefinition", obj)
    assert errors[0] == ('metadata.name: Invalid value: "widgets.example.com": must be '
                         'spec.names.plural+"."+spec.group')
    assert errors[1] == ('spec.group: Invalid value: "example": should be a domain with at '
                         "least one dot")
    assert errors[2] == ('spec.scope: Unsupported value: "Global": supported values: '
                         '"Cluster", "Namespaced"')
    assert errors[3].startswith("spec.versions: Invalid value: [")
    assert errors[3].endswith("]: must have exactly one version marked as storage version")
    # the defaulted singular and listKind are no valid names either
    assert errors[4].startswith('spec.names.singular: Invalid value: "widget_thing": a DNS-1035 '
                                "label must consist of lower case alphanumeric characters")
    assert errors[5].startswith('spec.names.kind: Invalid value: "Widget_Thing": may have mixed '
                                "case, but should otherwise match: a DNS-1035 label")
    assert errors[6].startswith('spec.names.listKind: Invalid value: "Widget_ThingList"')
    assert len(errors) == 7


def test_crd_names_are_lower_case() -> None:
    obj = crd()
    obj["spec"]["names"].update(plural="Widgets", singular="Widget")
    obj["metadata"]["name"] = "Widgets.example.com"
    errors = create_errors("CustomResourceDefinition", obj)
    assert 'spec.names.plural: Invalid value: "Widgets": a DNS-1035 label must consist of ' \
           "lower case alphanumeric characters or '-', start with an alphabetic character, " \
           "and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used " \
           "for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')" in errors
    assert any(e.startswith('spec.names.singular: Invalid value: "Widget"') for e in errors)


def test_crd_schemas_must_be_structural() -> None:
    schema = {"type": "object", "properties": {
        "spec": {"properties": {"tags": {"type": "array"}}},
        "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}
    errors = create_errors("CustomResourceDefinition", crd(schema))
    assert errors == [
        "spec.versions[0].schema.openAPIV3Schema.properties[metadata]: Forbidden: must not "
        "specify anything other than name and generateName, but metadata is implicitly "
        "specified",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags].items: "
        "Required value: must be specified",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must "
        "not be empty for specified object fields",
    ]
    assert create_errors("CustomResourceDefinition", crd({"type": "array",
                                                          "items": {"type": "string"}})) == [
        'spec.versions[0].schema.openAPIV3Schema.type: Invalid value: "array": must be object '
        "at the root"
    ]
    missing = crd()
    del missing["spec"]["versions"][0]["schema"]
    assert create_errors("CustomResourceDefinition", missing) == [
        "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
    ]


def test_crd_value_validations_must_stay_value_validations() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True,
                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "size": {"type": "string", "oneOf": [{"type": "string", "pattern": "^[0-9]+$"}]},
        "flags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    }}}}
    assert create_errors("CustomResourceDefinition", crd(schema)) == [
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[flags]."
        "uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime "
        "complexity becomes quadratic",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].oneOf[0]."
        "type: Forbidden: must be empty to be structural",
    ]


def test_crd_scope_and_group_are_immutable() -> None:
    old = created("CustomResourceDefinition", crd())
    new = copy.deepcopy(old)
    new["spec"]["versions"][0]["served"] = False
    assert update_errors("CustomResourceDefinition", old, new) == []
    new["spec"]["scope"] = "Cluster"
    assert update_errors("CustomResourceDefinition", old, new) == [
        'spec.scope: Invalid value: "Cluster": field is immutable'
    ]


def test_crd_stored_versions_must_stay_in_spec() -> None:
    old = created("CustomResourceDefinition", crd())
    old["status"] = {"storedVersions": ["v1"]}
    new = copy.deepcopy(old)
    new["spec"]["versions"][0]["name"] = "v2"
    assert update_errors("CustomResourceDefinition", old, new) == [
        'status.storedVersions[0]: Invalid value: "v1": missing from spec.versions; v1 was '
        "previously a storage version, and must remain in spec.versions until a storage "
        "migration ensures no data remains persisted in v1 and removes v1 from "
        "status.storedVersions"
    ]


# --- custom resources ------------------------------------------------------------------------

def test_custom_resource_type_errors_use_kube_openapi_messages() -> None:
    assert custom_errors(widget(replicas="string")) == [
        'spec.replicas: Invalid value: "string": spec.replicas in body must be of type '
        'integer: "string"'
    ]
    obj = widget()
    del obj["spec"]["sourceArtifact"]
    assert custom_errors(obj) == ["spec.sourceArtifact: Required value"]


def test_custom_resource_value_validations() -> None:
    obj = widget(sourceArtifact="no-scheme", replicas=11, mode="slow", owner="toolong",
                 tags=["a", "b", "c"])
    assert custom_errors(obj) == [
        'spec.sourceArtifact: Invalid value: "no-scheme": spec.sourceArtifact in body should '
        "match '^[a-z]+:'",
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal "
        "to 10",
        'spec.mode: Unsupported value: "slow": supported values: "fast", "safe"',
        "spec.owner: Too long: may not be more than 5 bytes",
        "spec.tags: Too many: 3: must have at most 2 items",
    ]


def test_custom_resource_maps_sets_nullables_and_int_or_string() -> None:
    assert custom_errors(widget(labels={"a": "x", "b": 2}, tags=["a", "a"], port=True,
                                note=None, owner=None)) == [
        'spec.port: Invalid value: "boolean": spec.port in body must be of type '
        'integer,string: "boolean"',
        'spec.owner: Invalid value: "null": spec.owner in body must be of type string: "null"',
        'spec.tags[1]: Duplicate value: "a"',
        'spec.labels.b: Invalid value: "integer": spec.labels.b in body must be of type '
        'string: "integer"',
    ]
    assert custom_errors(widget(port=8080)) == custom_errors(widget(port="http")) == []


def test_custom_resource_formats() -> None:
    assert custom_errors(widget(when="2024-02-30T10:00:00Z")) == [
        'spec.when: Invalid value: "2024-02-30T10:00:00Z": spec.when in body must be of type '
        'date-time: "2024-02-30T10:00:00Z"'
    ]
    assert custom_errors(widget(when="2024-02-29T10:00:00.5+01:00")) == []
    # kube drops int32/int64 formats from CRD schemas, so no range is enforced
    assert custom_errors(widget(count32=2**40)) == []


def test_custom_resource_junctors_and_embedded_resources() -> None:
    errors = custom_errors(widget(choice="b", template={"kind": "Pod"}))
    assert errors == [
        "spec.template.apiVersion: Required value: must not be empty",
        '<nil>: Invalid value: "": "spec.choice" must validate at least one schema (anyOf)',
        'spec.choice: Unsupported value: "b": supported values: "a"',
    ]
    assert custom_errors(widget(choice="xyz")) == []


def test_custom_resource_metadata_is_object_meta() -> None:
    obj = widget()
    obj["metadata"]["name"] = "Bad_Name"
    (error,) = custom_errors(obj)
    assert error.startswith('metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123')
    # validate_create checks custom resources the same way
    with pytest.raises(statuses.ApiError):
        validation.validate_create(widget_resource(), obj)


def test_custom_resource_updates_check_metadata_and_schema() -> None:
    resource = widget_resource()
    old = widget()
    new = widget(replicas=-1)
    new["metadata"]["name"] = "renamed"
    with pytest.raises(statuses.ApiError) as info:
        validation.validate_update(resource, old, new)
    assert causes_of(info.value) == [
        'metadata.name: Invalid value: "renamed": field is immutable',
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or "
        "equal to 0",
    ]


def test_prune_drops_unknown_fields_but_keeps_the_object_header() -> None:
    obj = widget(unknown=1, raw={"anything": {"goes": True}}, labels={"k": "v"},
                 endpoints=[{"host": "a", "extra": 1}],
                 template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                           "spec": {"kept": True}})
    obj["extra"] = {"x": 1}
    obj["status"] = {"ready": True, "phase": "unknown"}
    pruned = validation.prune(widget_resource().schema or {}, obj)
    assert pruned is obj
    assert obj == {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w"),
        "spec": {"sourceArtifact": "oci:registry/app", "raw": {"anything": {"goes": True}},
                 "labels": {"k": "v"}, "endpoints": [{"host": "a"}],
                 "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                              "spec": {"kept": True}}},
        "status": {"ready": True},
    }


def test_prune_drops_nulls_the_schema_does_not_allow() -> None:
    obj = widget(owner=None, note=None, replicas=None)
    validation.prune(widget_resource().schema or {}, obj)
    assert "owner" not in obj["spec"]  # not nullable, no default: dropped
    assert obj["spec"]["note"] is None  # nullable: kept
    assert obj["spec"]["replicas"] is None  # has a default: left for defaulting


def test_custom_resource_defaults_from_the_schema() -> None:
    resource = widget_resource()
    obj = widget(endpoints=[{"host": "a"}, {"host": "b", "port": 80}], replicas=None)
    validation.apply_defaults(resource, obj)
    assert obj["spec"]["replicas"] == 1
    assert obj["spec"]["settings"] == {"level": "info"}
    assert obj["spec"]["endpoints"] == [{"host": "a", "port": 443}, {"host": "b", "port": 80}]
    assert "mode" not in obj["spec"]


# --- other core kinds --------------------------------------------------------------------------

def test_secret_string_data_is_folded_into_data() -> None:
    secret = created("Secret", {"apiVersion": "v1", "kind": "Secret", "metadata": meta("s"),
                                "stringData": {"password": "hunter2"}})
    assert secret["data"] == {"password": "aHVudGVyMg=="}
    assert "stringData" not in secret and secret["type"] == "Opaque"
    tls = {"apiVersion": "v1", "kind": "Secret", "metadata": meta("t"),
           "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}
    assert create_errors("Secret", tls) == ["data[tls.key]: Required value"]


def test_configmap_keys() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c"),
          "data": {"good.key": "1", "bad key": "2", "..x": "3"}}
    errors = create_errors("ConfigMap", cm)
    assert errors[0].startswith('data[bad key]: Invalid value: "bad key": a valid config key '
                                "must consist of alphanumeric characters, '-', '_' or '.'")
    assert errors[1] == "data[..x]: Invalid value: \"..x\": must not start with '..'"
    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c"),
           "data": {"a": "x" * (1024 * 1024 + 1)}}
    assert create_errors("ConfigMap", big) == ["[]: Too long: may not be more than 1048576 bytes"]


# --- []byte fields: base64 as Go's JSON decoder reads it -----------------------------------------

@pytest.mark.parametrize(("text", "offset"), [
    ("", None), ("b2xk", None), ("b2xk\r\nbmV3", None), ("ab==", None), ("abc=", None),
    ("ab=\n=", None), ("ab==\n", None),
    ("abc", 0), ("abcde", 4),  # a quantum cut short: where it started
    ("ab!d", 2), ("+", 0),  # a byte outside the alphabet
    ("a===", 1), ("ab=x", 2),  # padding too early, or half of it
    ("ab=", 3),  # "==" expected, the input ended
    ("abc=x", 4), ("YQ==YQ==", 4),  # anything after the padding
])
def test_base64_offsets_are_gos(text: str, offset: int | None) -> None:
    assert validation.go_base64_error(text) == offset


def bad_request(kind: str, obj: Obj) -> str:
    validation.apply_defaults(R[kind], obj)
    with pytest.raises(statuses.ApiError) as info:
        validation.validate_create(R[kind], obj)
    assert info.value.code == 400
    return info.value.message


def test_bytes_fields_are_decoded_like_kube_and_served_canonical() -> None:
    def secret(value: str) -> Obj:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta("s"),
                "data": {"key": value}}

    assert bad_request("Secret", secret("ab!d")) == (
        'Secret in version "v1" cannot be handled as a Secret: '
        "illegal base64 data at input byte 2")
    # Go skips newlines and ignores stray padding bits; kube serves the bytes back canonical
    assert created("Secret", secret("b2xk\nbmV3"))["data"] == {"key": "b2xkbmV3"}
    assert created("Secret", secret("YR=="))["data"] == {"key": "YQ=="}

    def with_bundle(bundle: str) -> Obj:
        hook = webhook()
        hook["clientConfig"]["caBundle"] = bundle
        return webhook_configuration(hook)

    assert bad_request("MutatingWebhookConfiguration", with_bundle("b3RoZXI=+")) == (
        'MutatingWebhookConfiguration in version "v1" cannot be handled as a '
        "MutatingWebhookConfiguration: illegal base64 data at input byte 8")
    stored = created("MutatingWebhookConfiguration", with_bundle("LS0t\nLS0t\n"))
    assert stored["webhooks"][0]["clientConfig"]["caBundle"] == "LS0tLS0t"
