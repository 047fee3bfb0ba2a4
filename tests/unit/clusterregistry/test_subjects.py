"""NATS names: one place, tokens that cannot break a subject."""

from __future__ import annotations

import pytest

from clusterregistry import subjects


def test_kube_subject_uses_uid_and_underscore_for_cluster_scope() -> None:
    assert subjects.kube("pod", "nf", "0f1e") == "clusterregistry.kube.pod.nf.0f1e"
    assert subjects.kube("artifact", None, "9a") == "clusterregistry.kube.artifact._.9a"


@pytest.mark.parametrize("bad", ["a.b", "", "a b", "*", ">"])
def test_tokens_that_would_split_or_wildcard_a_subject_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.kube("pod", "ns", bad)
    with pytest.raises(ValueError):
        subjects.mirror_result(bad)
    if bad:  # an empty namespace is the cluster scope, spelled "_"
        with pytest.raises(ValueError):
            subjects.kube("pod", bad, "uid")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        subjects.kube("deployment", "ns", "uid")


def test_msg_id() -> None:
    assert subjects.msg_id("u", "42", "ADDED") == "u:42:ADDED"
