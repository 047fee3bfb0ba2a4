"""Pod template hashing and pod construction (kube's ComputeHash and GetPodFromTemplate)."""

from __future__ import annotations

import struct
from typing import Any

from kubesim.controllers.templates import (
    SAFE_ALPHANUMS,
    canonical_json,
    compute_hash,
    fnv32a,
    generate_name_prefix,
    pod_from_template,
    safe_encode,
    template_without_hash,
    templates_equal_ignoring_hash,
)

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}


def test_fnv32a_reference_vectors() -> None:
    # published FNV-1a 32-bit test vectors
    assert fnv32a(b"") == 0x811C9DC5
    assert fnv32a(b"a") == 0xE40C292C
    assert fnv32a(b"foobar") == 0xBF9CF968


def test_fnv32a_can_continue_a_running_hash() -> None:
    assert fnv32a(b"bar", fnv32a(b"foo")) == fnv32a(b"foobar")


def test_safe_encode_maps_digits_like_kube() -> None:
    # '0' is 48, 48 % 27 == 21 -> '4'; '9' is 57 -> 57 % 27 == 3 -> 'f'
    assert safe_encode("0") == SAFE_ALPHANUMS[48 % 27] == "4"
    assert safe_encode("9") == "f"
    assert set(safe_encode("0123456789")) <= set(SAFE_ALPHANUMS)


def test_compute_hash_is_stable_and_key_order_independent() -> None:
    reordered = {"spec": TEMPLATE["spec"], "metadata": TEMPLATE["metadata"]}
    assert compute_hash(TEMPLATE) == compute_hash(reordered)
    value = fnv32a(canonical_json(TEMPLATE))
    assert compute_hash(TEMPLATE) == safe_encode(str(value))
    assert all(ch in SAFE_ALPHANUMS for ch in compute_hash(TEMPLATE))


def test_collision_count_changes_the_hash_as_eight_little_endian_bytes() -> None:
    plain = compute_hash(TEMPLATE)
    assert compute_hash(TEMPLATE, 0) != plain  # a nil count and a zero count differ
    expected = fnv32a(struct.pack("<I", 1) + bytes(4), fnv32a(canonical_json(TEMPLATE)))
    assert compute_hash(TEMPLATE, 1) == safe_encode(str(expected))
    assert compute_hash(TEMPLATE, 1) != compute_hash(TEMPLATE, 2)


def test_template_change_changes_the_hash() -> None:
    other = {"metadata": TEMPLATE["metadata"],
             "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}
    assert compute_hash(other) != compute_hash(TEMPLATE)


def test_equal_ignoring_hash() -> None:
    hashed = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
              "spec": TEMPLATE["spec"]}
    assert templates_equal_ignoring_hash(hashed, TEMPLATE)
    assert template_without_hash({"metadata": {"labels": {"pod-template-hash": "x"}}}) == {}


def test_pod_from_template() -> None:
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u",
           "controller": True, "blockOwnerDeletion": True}
    template: dict[str, Any] = {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"},
                             "finalizers": ["x/y"]},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    pod = pod_from_template(template, namespace="ns", owner_ref=ref, generate_name="web-1-",
                            extra_labels={"extra": "1"})
    assert pod["metadata"] == {"namespace": "ns", "ownerReferences": [ref],
                               "generateName": "web-1-",
                               "labels": {"app": "web", "extra": "1"},
                               "annotations": {"a": "1"}, "finalizers": ["x/y"]}
    pod["spec"]["containers"][0]["image"] = "changed"
    assert template["spec"]["containers"][0]["image"] == "nginx"  # a copy


def test_generate_name_prefix_leaves_room_for_the_suffix() -> None:
    assert generate_name_prefix("web") == "web-"
    assert len(generate_name_prefix("x" * 100)) == 58
