"""Label selector and node selector matching for the controllers.

Workload selectors (metav1.LabelSelector) are kubesim.selectors', parsed
once and cached; node selectors (NodeSelectorTerms of node affinity, with
Gt/Lt and matchFields on metadata.name) are a different type in kube and
are matched here. Semantics follow apimachinery: an empty LabelSelector
matches everything, a missing one matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from kubesim.selectors import LabelSelector, selector_from_label_selector
from kubesim.statuses import ApiError

_encoder = msgspec.json.Encoder(order="sorted")


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expression.get("key", "")
    operator = expression.get("operator", "")
    values = expression.get("values") or []
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        # NotIn matches objects lacking the key too (apimachinery semantics).
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        # Only node selector requirements have Gt/Lt: integer comparison, and a
        # label that is missing or not an integer never matches.
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


# Workload selectors are few and change rarely; parsed ones are kept by their JSON form.
_parsed: dict[bytes, LabelSelector] = {}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a metav1.LabelSelector selects an object with these labels (apimachinery's
    LabelSelectorAsSelector, from kubesim.selectors)."""
    if selector is None:
        return False
    key = _encoder.encode(selector)
    parsed = _parsed.get(key)
    if parsed is None:
        if len(_parsed) > 4096:
            _parsed.clear()
        try:
            parsed = selector_from_label_selector(selector)
        except ApiError:
            parsed = LabelSelector.nothing()  # an invalid selector selects nothing
        _parsed[key] = parsed
    return parsed.matches(labels)


def selector_is_empty(selector: Mapping[str, Any] | None) -> bool:
    return (
        selector is not None
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """One NodeSelectorTerm: all its requirements hold (terms are ORed by the caller)."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        # An empty term matches no objects (core/v1 NodeSelectorTerm docs).
        return False
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if not all(_expression_matches(expression, labels) for expression in expressions):
        return False
    # The only field a NodeSelector may name is metadata.name.
    field_values = {"metadata.name": metadata.get("name", "")}
    return all(_expression_matches(field, field_values) for field in fields)


def pod_fits_node_selectors(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """spec.nodeSelector and required node affinity of a pod against a node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(node_selector_term_matches(term, node) for term in terms)
