"""kubesim.selectors: label and field selectors as kube-apiserver parses and matches them.

The expected strings and messages are those of k8s.io/apimachinery/pkg/labels and
pkg/fields; clients show them to users verbatim.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesim import statuses
from kubesim.selectors import (
    FIELDS_BY_KIND,
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Requirement,
    parse_field_selector,
    parse_label_selector,
    selector_from_label_selector,
    supported_fields,
)

KEY_NAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"


def bad_request(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(statuses.ApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    return caught.value.message


# -- label selector grammar -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("   ", ""),
        ("x=a,y=b,z=c", "x=a,y=b,z=c"),
        ("x!=a,y=b", "x!=a,y=b"),
        ("x=", "x="),
        ("x= ", "x="),
        ("x=,z= ", "x=,z="),
        ("!x", "!x"),
        ("x", "x"),
        ("x>1", "x>1"),
        ("x>1,z<5", "x>1,z<5"),
        ("x==a", "x==a"),
        ("a = b", "a=b"),
        ("\ta\n==\rb ,  c", "a==b,c"),
        # keys are sorted; values of a set are sorted and deduplicated
        ("z=1,a=2", "a=2,z=1"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("x in (b,a,b)", "x in (a,b)"),
        ("x in (a)", "x in (a)"),
        ("x in ( a , b )", "x in (a,b)"),
        ("x in (,)", "x in ()"),
        ("x in (a,)", "x in (,a)"),
        # `in` and `notin` are keywords only where an operator is expected
        ("in in (in)", "in in (in)"),
        ("x notin (in,notin)", "x notin (in,notin)"),
        ("notin=in", "notin=in"),
        ("x=in", "x=in"),
        ("!in", "!in"),
        ("example.com/app=web", "example.com/app=web"),
        ("app.kubernetes.io/name in (api, web)", "app.kubernetes.io/name in (api,web)"),
        ("!c,a!=b", "a!=b,!c"),
    ],
)
def test_parse_label_selector_renders_the_canonical_form(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(canonical) == selector


def test_parse_is_deterministic_whatever_the_order() -> None:
    assert parse_label_selector("x=a,a=x") == parse_label_selector("a=x,x=a")
    assert str(parse_label_selector("x=a,a=x")) == "a=x,x=a"


def test_parsed_requirements_are_sorted_by_key_with_sorted_values() -> None:
    selector = parse_label_selector("tier notin (b,a),app=web,!legacy,env")
    assert selector.requirements == (
        Requirement("app", "=", ("web",)),
        Requirement("env", "exists"),
        Requirement("legacy", "!"),
        Requirement("tier", "notin", ("a", "b")),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "x=a||y=b",
            f'unable to parse requirement: values[0][x]: Invalid value: "a||y": {VALUE_RULE}',
        ),
        ("a b", f"unable to parse requirement: found 'b', expected: {BINARY_OPERATORS}"),
        ("a!", f"unable to parse requirement: found '!', expected: {BINARY_OPERATORS}"),
        ("a (", f"unable to parse requirement: found '(', expected: {BINARY_OPERATORS}"),
        ("x==a==b", "found '==', expected: ',' or 'end of string'"),
        ("!x=a", "found '=', expected: ',' or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        ("a=b,=c", "found '=', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (b,", "unable to parse requirement: found '', expected: ',', or identifier"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in", "unable to parse requirement: found '' expected: '('"),
        (
            "x<a",
            'unable to parse requirement: values[0]: Invalid value: "a": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            # a Gt/Lt bound must be a valid label value too: no negative numbers
            "x>-5",
            f'unable to parse requirement: values[0][x]: Invalid value: "-5": {VALUE_RULE}',
        ),
        (
            "a=-b",
            f'unable to parse requirement: values[0][a]: Invalid value: "-b": {VALUE_RULE}',
        ),
        (
            "a=" + "v" * 64,
            f'unable to parse requirement: values[0][a]: Invalid value: "{"v" * 64}": '
            "must be no more than 63 bytes",
        ),
        (
            "-a=b",
            f'unable to parse requirement: <nil>: Invalid value: "-a": name part {KEY_NAME_RULE}',
        ),
        (
            "a/b/c",
            'unable to parse requirement: <nil>: Invalid value: "a/b/c": a valid label key '
            f"{KEY_NAME_RULE} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')",
        ),
        (
            "Example.com/a=b",
            'unable to parse requirement: <nil>: Invalid value: "Example.com/a": '
            f"prefix part {SUBDOMAIN_RULE}",
        ),
        (
            "/a",
            'unable to parse requirement: <nil>: Invalid value: "/a": '
            "prefix part must be non-empty",
        ),
        (
            "a/",
            'unable to parse requirement: <nil>: Invalid value: "a/": '
            f"name part must be non-empty; name part {KEY_NAME_RULE}",
        ),
    ],
)
def test_parse_errors_are_bad_requests_with_kubes_message(text: str, message: str) -> None:
    assert bad_request(parse_label_selector, text) == message


def test_label_key_name_is_limited_to_63_bytes_and_prefix_to_253() -> None:
    name = "n" * 63
    assert str(parse_label_selector(name)) == name
    too_long = bad_request(parse_label_selector, "n" * 64)
    assert too_long.endswith(f'"{"n" * 64}": name part must be no more than 63 bytes')
    prefix = ".".join(["p" * 63] * 4)[:253]
    assert str(parse_label_selector(f"{prefix}/x")) == f"{prefix}/x"
    assert "prefix part must be no more than 253 bytes" in bad_request(
        parse_label_selector, f"{prefix}q/x"
    )


def test_label_value_may_be_63_bytes() -> None:
    value = "v" * 63
    assert parse_label_selector(f"a={value}").matches({"a": value})


# -- label matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {"x": "y"}, True),
        ("", {}, True),
        ("x=y", {"x": "y"}, True),
        ("x=y", {"x": "z"}, False),
        ("x=z", {}, False),
        ("x==y", {"x": "y"}, True),
        ("x=y,z=w", {"x": "y", "z": "w"}, True),
        ("x=y,z=w", {"x": "w", "z": "w"}, False),
        ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
        ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
        ("x!=y", {}, True),
        ("x", {"x": "z"}, True),
        ("x", {"x": ""}, True),
        ("x", {"y": "z"}, False),
        ("!x", {"y": "z"}, True),
        ("!x", {"x": ""}, False),
        ("x=", {"x": ""}, True),
        ("x=", {}, False),
        ("x in (a,b)", {"x": "b"}, True),
        ("x in (a,b)", {"x": "c"}, False),
        ("x in (a,b)", {}, False),
        ("x in ()", {"x": ""}, True),
        ("x in ()", {}, False),
        ("x notin (a,b)", {"x": "c"}, True),
        ("x notin (a,b)", {"x": "a"}, False),
        ("x notin (a,b)", {}, True),
        ("x notin (a)", {"x": "a"}, False),
        ("x>1", {"x": "2"}, True),
        ("x>1", {"x": "1"}, False),
        ("x>1", {"x": "0"}, False),
        ("x>1", {}, False),
        ("x<1", {"x": "0"}, True),
        ("x<1", {"x": "2"}, False),
        ("x>1", {"x": "+2"}, True),
        ("x>1", {"x": "two"}, False),
        ("x>1", {"x": " 2"}, False),
        ("x>1", {"x": "1_000"}, False),
        ("x>1", {"x": "99999999999999999999"}, False),
        ("x<1", {"x": "٣"}, False),
        ("foo=bar,baz=blah", {"foo": "bar", "baz": "blah"}, True),
        ("foo=bar,baz!=blah", {"foo": "bar", "baz": "blah"}, False),
        ("app in (web,api),!legacy,tier", {"app": "api", "tier": "1"}, True),
        ("app in (web,api),!legacy,tier", {"app": "api", "tier": "1", "legacy": "y"}, False),
    ],
)
def test_label_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_missing_labels_count_as_no_labels() -> None:
    assert parse_label_selector("!x").matches(None)
    assert parse_label_selector("x notin (a)").matches(None)
    assert not parse_label_selector("x").matches(None)
    assert parse_label_selector("").matches(None)


def test_empty_only_for_a_selector_without_requirements() -> None:
    assert parse_label_selector("").empty
    assert LabelSelector.everything().empty
    assert not parse_label_selector("a").empty
    assert not LabelSelector.nothing().empty


def test_requires_exact_match() -> None:
    selector = parse_label_selector("a=1,b in (2),c in (3,4),d!=5,e")
    assert selector.requires_exact_match("a") == "1"
    assert selector.requires_exact_match("b") == "2"
    assert selector.requires_exact_match("c") is None
    assert selector.requires_exact_match("d") is None
    assert selector.requires_exact_match("e") is None
    assert selector.requires_exact_match("f") is None


def test_selectors_compare_by_requirements() -> None:
    assert parse_label_selector("a=1,b") == parse_label_selector("b, a=1")
    assert hash(parse_label_selector("a=1,b")) == hash(parse_label_selector("b,a=1"))
    assert parse_label_selector("a=1") != parse_label_selector("a==1")
    assert LabelSelector.nothing() != LabelSelector.everything()
    assert repr(parse_label_selector("a=1")) == "LabelSelector('a=1')"


# -- metav1.LabelSelector ---------------------------------------------------------------------


def test_nil_label_selector_matches_nothing() -> None:
    selector = selector_from_label_selector(None)
    assert not selector.matches({})
    assert not selector.matches({"a": "b"})
    assert not selector.empty
    assert selector.matches_nothing
    assert str(selector) == ""


@pytest.mark.parametrize(
    "empty",
    [
        {},
        {"matchLabels": {}},
        {"matchExpressions": []},
        {"matchLabels": None, "matchExpressions": None},
    ],
)
def test_empty_label_selector_matches_everything(empty: dict[str, Any]) -> None:
    selector = selector_from_label_selector(empty)
    assert selector.empty
    assert selector.matches({})
    assert selector.matches({"a": "b"})


def test_label_selector_with_labels_and_expressions() -> None:
    selector = selector_from_label_selector(
        {
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(selector) == (
        "app=web,env in (prod,staging),!legacy,owner,tier=front,track notin (canary)"
    )
    base = {"app": "web", "tier": "front", "env": "prod", "owner": "me"}
    assert selector.matches(base)
    assert selector.matches({**base, "track": "stable"})
    assert not selector.matches({**base, "track": "canary"})
    assert not selector.matches({**base, "legacy": "true"})
    assert not selector.matches({**base, "env": "dev"})
    assert not selector.matches({k: v for k, v in base.items() if k != "owner"})
    assert not selector.matches({**base, "app": "api"})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            '"Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "in", "values": ["b"]}]},
            '"in" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn"}]},
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: ["x"]: values set must be empty for exists and does not exist',
        ),
        (
            {"matchLabels": {"a": "b c"}},
            f'values[0][a]: Invalid value: "b c": {VALUE_RULE}',
        ),
        (
            {"matchLabels": {"-a": "b"}},
            f'key: Invalid value: "-a": name part {KEY_NAME_RULE}',
        ),
        (
            {"matchExpressions": [{"key": "-a", "operator": "In", "values": ["ok", "-x"]}]},
            f'[key: Invalid value: "-a": name part {KEY_NAME_RULE}, '
            f'values[1][-a]: Invalid value: "-x": {VALUE_RULE}]',
        ),
    ],
)
def test_invalid_label_selectors_are_bad_requests(selector: dict[str, Any], message: str) -> None:
    assert bad_request(selector_from_label_selector, selector) == message


def test_label_selector_values_keep_their_order_but_print_sorted() -> None:
    selector = selector_from_label_selector(
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["z", "b"]}]}
    )
    assert selector.requirements == (Requirement("a", "in", ("z", "b")),)
    assert str(selector) == "a in (b,z)"
    assert selector.matches({"a": "z"})


# -- properties ----------------------------------------------------------------------------------

names = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=8).filter(
    lambda s: s[0].isalnum() and s[-1].isalnum()
)
keys = st.one_of(names, st.builds(lambda p, n: f"{p}.io/{n}", st.sampled_from(["a", "b-c"]), names))
values = st.one_of(st.just(""), names)
requirements = st.one_of(
    st.builds(lambda k, v: Requirement(k, "=", (v,)), keys, values),
    st.builds(lambda k, v: Requirement(k, "!=", (v,)), keys, values),
    st.builds(
        lambda k, vs: Requirement(k, "in", tuple(sorted(vs))),
        keys,
        st.sets(values, min_size=1, max_size=3),
    ),
    st.builds(
        lambda k, vs: Requirement(k, "notin", tuple(sorted(vs))),
        keys,
        st.sets(values, min_size=1, max_size=3),
    ),
    st.builds(lambda k: Requirement(k, "exists"), keys),
    st.builds(lambda k: Requirement(k, "!"), keys),
    st.builds(lambda k, n: Requirement(k, "gt", (str(n),)), keys, st.integers(0, 5)),
    st.builds(lambda k, n: Requirement(k, "lt", (str(n),)), keys, st.integers(0, 5)),
)
label_sets = st.dictionaries(keys, st.one_of(values, st.integers(-6, 6).map(str)), max_size=6)


def reference_match(requirement: Requirement, labels: dict[str, str]) -> bool:
    present = requirement.key in labels
    value = labels.get(requirement.key)
    op, wanted = requirement.operator, requirement.values
    if op in ("=", "==", "in"):
        return present and value in wanted
    if op in ("!=", "notin"):
        return not present or value not in wanted
    if op == "exists":
        return present
    if op == "!":
        return not present
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return False
    if number is None:
        return False
    return number > int(wanted[0]) if op == "gt" else number < int(wanted[0])


@given(st.lists(requirements, max_size=5), label_sets)
def test_matching_agrees_with_the_requirement_semantics(
    reqs: list[Requirement], labels: dict[str, str]
) -> None:
    selector = LabelSelector(reqs)
    assert selector.matches(labels) == all(reference_match(r, labels) for r in reqs)


@given(st.lists(requirements, max_size=5), label_sets)
def test_the_canonical_string_parses_back_to_the_same_selector(
    reqs: list[Requirement], labels: dict[str, str]
) -> None:
    selector = LabelSelector(reqs)
    reparsed = parse_label_selector(str(selector))
    assert str(reparsed) == str(selector)
    assert reparsed.matches(labels) == selector.matches(labels)


@given(st.dictionaries(keys, values, max_size=5), label_sets)
def test_match_labels_selects_supersets(
    match_labels: dict[str, str], labels: dict[str, str]
) -> None:
    selector = selector_from_label_selector({"matchLabels": match_labels})
    assert selector.matches(labels) == all(labels.get(k) == v for k, v in match_labels.items())
    assert selector.matches({**labels, **match_labels})


# -- field selectors -------------------------------------------------------------------------

POD_FIELDS = supported_fields("Pod")


@pytest.mark.parametrize(
    ("text", "requirements", "canonical"),
    [
        ("", (), ""),
        (",", (), ""),
        ("metadata.name=a", (FieldRequirement("metadata.name", "=", "a"),), "metadata.name=a"),
        ("metadata.name==a", (FieldRequirement("metadata.name", "=", "a"),), "metadata.name=a"),
        ("spec.nodeName!=", (FieldRequirement("spec.nodeName", "!=", ""),), "spec.nodeName!="),
        (
            # terms are sorted as strings
            "status.phase=Running,metadata.namespace=default",
            (
                FieldRequirement("metadata.namespace", "=", "default"),
                FieldRequirement("status.phase", "=", "Running"),
            ),
            "metadata.namespace=default,status.phase=Running",
        ),
        (
            r"metadata.name=a\,b\=c\\d",
            (FieldRequirement("metadata.name", "=", "a,b=c\\d"),),
            r"metadata.name=a\,b\=c\\d",
        ),
        ("metadata.name=a,,", (FieldRequirement("metadata.name", "=", "a"),), "metadata.name=a"),
    ],
)
def test_parse_field_selector(
    text: str, requirements: tuple[FieldRequirement, ...], canonical: str
) -> None:
    selector = parse_field_selector(text, supported=POD_FIELDS)
    assert selector.requirements == requirements
    assert str(selector) == canonical
    assert selector.empty == (not requirements)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        (
            "metadata.name=a,b",
            "invalid selector: 'metadata.name=a,b'; can't understand 'b'",
        ),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
        ("metadata.name=a\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        ("spec.foo=bar", "field label not supported: spec.foo"),
        # no trimming: the space is part of the field name
        ("metadata.name =a", "field label not supported: metadata.name "),
        ("metadata.labels=a", "field label not supported: metadata.labels"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    assert bad_request(parse_field_selector, text, supported=POD_FIELDS) == message


def test_syntax_errors_come_before_unsupported_fields() -> None:
    message = bad_request(parse_field_selector, "zzz=1,aaa", supported=POD_FIELDS)
    assert message == "invalid selector: 'zzz=1,aaa'; can't understand 'aaa'"


def test_the_first_operator_splits_a_term() -> None:
    selector = parse_field_selector("metadata.name!=a\\=b", supported=POD_FIELDS)
    assert selector.requirements == (FieldRequirement("metadata.name", "!=", "a=b"),)


def test_supported_fields_per_kind() -> None:
    base = {"metadata.name", "metadata.namespace"}
    assert supported_fields("Pod") == base | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    }
    assert {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "reason",
        "type",
        "source",
    } <= supported_fields("Event")
    assert supported_fields("Secret") == base | {"type"}
    assert supported_fields("Job") == base | {"status.successful"}
    assert supported_fields("ReplicaSet") == base | {"status.replicas"}
    # cluster-scoped kinds with their own conversion have no metadata.namespace
    assert supported_fields("Node") == {"metadata.name", "spec.unschedulable"}
    assert supported_fields("Namespace") == {"metadata.name", "status.phase"}
    for kind in ("ConfigMap", "Deployment", "CronJob", "Lease", "MutatingWebhookConfiguration"):
        assert supported_fields(kind) == base
    assert supported_fields("Widget") == base
    assert set(FIELDS_BY_KIND) >= {"Pod", "Event", "Secret", "Node", "Job", "ReplicaSet"}


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "prod"},
        "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
        "status": status,
    }


@pytest.mark.parametrize(
    ("text", "obj", "expected"),
    [
        ("metadata.name=web-1", pod(), True),
        ("metadata.name=web-2", pod(), False),
        ("metadata.name!=web-2", pod(), True),
        ("metadata.namespace=prod,spec.nodeName=node-a", pod(), True),
        ("spec.nodeName=", pod(), False),
        ("spec.nodeName=", {"metadata": {"name": "x"}, "spec": {}}, True),
        ("spec.nodeName!=", {"metadata": {"name": "x"}}, False),
        ("status.phase=Running", pod(phase="Running"), True),
        ("status.phase!=Running", pod(phase="Pending"), True),
        ("status.phase=", pod(), True),
        ("status.podIP=10.0.0.1", pod(podIP="10.0.0.1"), True),
        ("status.podIP=10.0.0.2", pod(podIP="10.0.0.1", podIPs=[{"ip": "10.0.0.2"}]), True),
        ("status.podIPs=10.0.0.1", pod(podIPs=[{"ip": "10.0.0.1"}]), False),
        ("status.podIPs=", pod(podIPs=[{"ip": "10.0.0.1"}]), True),
        ("spec.hostNetwork=false", pod(), True),
        ("spec.hostNetwork=true", {"spec": {"hostNetwork": True}}, True),
        ("spec.hostNetwork=false", {"spec": {"hostNetwork": True}}, False),
    ],
)
def test_pod_field_matching(text: str, obj: dict[str, Any], expected: bool) -> None:
    assert parse_field_selector(text, supported=POD_FIELDS).matches(obj) is expected


@pytest.mark.parametrize(
    ("kind", "text", "obj", "expected"),
    [
        ("Node", "spec.unschedulable=false", {"spec": {}}, True),
        ("Node", "spec.unschedulable=true", {"spec": {"unschedulable": True}}, True),
        ("Node", "metadata.name=n1", {"metadata": {"name": "n1"}}, True),
        ("Job", "status.successful=0", {"status": {}}, True),
        ("Job", "status.successful=3", {"status": {"succeeded": 3}}, True),
        ("Job", "status.successful=3", {"status": {"successful": 3}}, False),
        ("ReplicaSet", "status.replicas=0", {}, True),
        ("ReplicaSet", "status.replicas=2", {"status": {"replicas": 2}}, True),
        ("Secret", "type=Opaque", {"type": "Opaque"}, True),
        ("Namespace", "status.phase=Active", {"status": {"phase": "Active"}}, True),
        ("Event", "source=kubelet", {"source": {"component": "kubelet"}}, True),
        ("Event", "source=ctrl", {"source": {}, "reportingComponent": "ctrl"}, True),
        (
            "Event",
            "source=kubelet",
            {"source": {"component": "kubelet"}, "reportingComponent": "ctrl"},
            True,
        ),
        ("Event", "reportingComponent=ctrl", {"reportingComponent": "ctrl"}, True),
        (
            "Event",
            "involvedObject.kind=Pod,involvedObject.name=web,type=Warning,reason=Failed",
            {
                "involvedObject": {"kind": "Pod", "name": "web"},
                "type": "Warning",
                "reason": "Failed",
            },
            True,
        ),
    ],
)
def test_kind_specific_field_values(
    kind: str, text: str, obj: dict[str, Any], expected: bool
) -> None:
    selector = parse_field_selector(text, supported=supported_fields(kind))
    assert selector.matches(obj) is expected


def test_field_selector_accessors() -> None:
    selector = parse_field_selector("metadata.name=a,spec.nodeName!=b", supported=POD_FIELDS)
    assert selector.requires_exact_match("metadata.name") == "a"
    assert selector.requires_exact_match("spec.nodeName") is None
    assert selector == parse_field_selector(
        "spec.nodeName!=b,metadata.name==a", supported=POD_FIELDS
    )
    assert hash(selector) == hash(FieldSelector(selector.requirements))
    assert FieldSelector().matches({"anything": 1})


@given(st.text(max_size=20))
def test_escaped_values_round_trip(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    selector = parse_field_selector(f"metadata.name={escaped}", supported=POD_FIELDS)
    assert selector.requirements == (FieldRequirement("metadata.name", "=", value),)
    assert selector.matches({"metadata": {"name": value}})
    assert parse_field_selector(str(selector), supported=POD_FIELDS) == selector


@given(
    st.dictionaries(st.sampled_from(["name", "namespace"]), st.text(max_size=5)),
    st.text(max_size=5),
)
def test_a_missing_field_compares_as_empty(metadata: dict[str, str], wanted: str) -> None:
    escaped = wanted.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    equal = parse_field_selector(f"metadata.name={escaped}", supported=POD_FIELDS)
    differs = parse_field_selector(f"metadata.name!={escaped}", supported=POD_FIELDS)
    actual = metadata.get("name", "")
    obj = {"metadata": metadata}
    assert equal.matches(obj) == (actual == wanted)
    assert differs.matches(obj) == (actual != wanted)
