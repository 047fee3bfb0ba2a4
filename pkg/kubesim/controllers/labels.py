"""Label selector and node selector matching for the controllers.

The controllers may only use the ApiServer's public methods, so they carry
their own small matcher for the two selector shapes they meet: the
metav1.LabelSelector of workloads (matchLabels + matchExpressions) and the
NodeSelectorTerms of pod node affinity (matchExpressions on labels,
matchFields on metadata.name). Semantics follow apimachinery: an empty
LabelSelector matches everything, a missing one matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a metav1.LabelSelector selects an object with these labels."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        _expression_matches(expression, labels)
        for expression in selector.get("matchExpressions") or []
    )


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
