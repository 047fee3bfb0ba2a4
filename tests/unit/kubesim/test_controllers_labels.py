"""Label selector and node selector matching."""

from __future__ import annotations

from kubesim.controllers.labels import (
    node_selector_term_matches,
    pod_fits_node_selectors,
    selector_is_empty,
    selector_matches,
)

NODE = {"metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1",
                                                  "zone": "a", "cores": "8"}}}


def test_label_selectors() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert selector_matches({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "back"]},
        {"key": "env", "operator": "NotIn", "values": ["prod"]},
        {"key": "app", "operator": "Exists"},
        {"key": "gone", "operator": "DoesNotExist"},
    ]}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert selector_is_empty({}) and not selector_is_empty({"matchLabels": {"a": "b"}})
    assert not selector_is_empty(None)


def test_node_selector_terms() -> None:
    assert node_selector_term_matches(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}, NODE)
    assert not node_selector_term_matches(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}, NODE)
    assert node_selector_term_matches(
        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}, NODE)
    assert not node_selector_term_matches(
        {"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}, NODE)
    assert not node_selector_term_matches({}, NODE)  # an empty term matches nothing


def test_pod_node_selector_and_required_affinity() -> None:
    assert pod_fits_node_selectors({"nodeSelector": {"zone": "a"}}, NODE)
    assert not pod_fits_node_selectors({"nodeSelector": {"zone": "b"}}, NODE)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": ["node-9"]}]},
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": ["node-1"]}]},
        ]}}}
    assert pod_fits_node_selectors({"affinity": affinity}, NODE)  # terms are ORed
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"].pop()
    assert not pod_fits_node_selectors({"affinity": affinity}, NODE)
