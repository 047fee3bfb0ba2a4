"""The pure rewrite: every container kind, every reference form, the annotation, idempotence.

Patches are applied with kubesim's RFC 6902 implementation (the one the simulated API
server applies webhook patches with), so each test checks the pod kube-apiserver would
store, not only the operations.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterregistry import kinds, references
from clusterregistry.sources import SourceRules
from clusterregistry.webhook import mutation
from clusterregistry.webhook.mutation import Result, Rules, rewrite
from clusterregistry.webhook.reviews import decode_pod
from kubesim.patching import json_patch

LOCAL = "edge.local:5000"
DIGEST = "sha256:" + "ab" * 32
ANNOTATION = kinds.ORIGINAL_IMAGES_ANNOTATION


def rules(**kw: Any) -> Rules:
    source_kw = {k: kw.pop(k) for k in list(kw) if k.startswith(("allow_", "deny_"))}
    return Rules(local_registry=LOCAL, sources=SourceRules(LOCAL, **source_kw), **kw)


def pod(containers: list[str] | None = None, *, init: list[str] | None = None,
        ephemeral: list[str] | None = None, annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "upf-7d9c-", "namespace": "nf"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    spec: dict[str, Any] = {"containers": [
        {"name": f"c{i}", "image": image, "env": [{"name": "X", "value": "1"}]}
        for i, image in enumerate(containers or [])]}
    if init is not None:
        spec["initContainers"] = [{"name": f"i{i}", "image": image}
                                  for i, image in enumerate(init)]
    if ephemeral is not None:
        spec["ephemeralContainers"] = [{"name": f"e{i}", "image": image, "stdin": True}
                                       for i, image in enumerate(ephemeral)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def run(obj: dict[str, Any], the_rules: Rules | None = None,
        **kw: Any) -> tuple[Result, dict[str, Any]]:
    view = decode_pod(msgspec.Raw(msgspec.json.encode(obj)))
    result = rewrite(view, the_rules or rules(), **kw)
    patched = json_patch(copy.deepcopy(obj), result.patch) if result.patch else obj
    # the patch is JSON (what the response carries)
    assert json.loads(json.dumps(result.patch)) == result.patch
    return result, patched


def images(obj: dict[str, Any], kind: str = "containers") -> list[str]:
    return [c["image"] for c in obj["spec"].get(kind, [])]


def originals(obj: dict[str, Any]) -> dict[str, str]:
    text = obj["metadata"].get("annotations", {}).get(ANNOTATION)
    return json.loads(text) if text is not None else {}


@pytest.mark.parametrize(("source", "local"), [
    ("nginx", f"{LOCAL}/docker.io/library/nginx"),
    ("nginx:1.25", f"{LOCAL}/docker.io/library/nginx:1.25"),
    ("library/nginx:1.25", f"{LOCAL}/docker.io/library/nginx:1.25"),
    ("docker.io/bitnami/redis:7", f"{LOCAL}/docker.io/bitnami/redis:7"),
    ("index.docker.io/library/busybox", f"{LOCAL}/docker.io/library/busybox"),
    ("acr.io/nf/upf:1.2", f"{LOCAL}/acr.io/nf/upf:1.2"),
    (f"acr.io/nf/upf@{DIGEST}", f"{LOCAL}/acr.io/nf/upf@{DIGEST}"),
    (f"acr.io/nf/upf:1.2@{DIGEST}", f"{LOCAL}/acr.io/nf/upf:1.2@{DIGEST}"),
    ("localhost:5000/a", f"{LOCAL}/localhost_5000/a"),
    ("localhost/a/b:tag", f"{LOCAL}/localhost/a/b:tag"),
    ("10.1.2.3:8443/team/app:v1.0.0-rc.1", f"{LOCAL}/10.1.2.3_8443/team/app:v1.0.0-rc.1"),
    ("Registry.Example.COM/team/app:V1", f"{LOCAL}/registry.example.com/team/app:V1"),
    ("host/a/b:tag@" + DIGEST, f"{LOCAL}/host/a/b:tag@{DIGEST}"),
])
def test_every_reference_form_maps_keeping_tag_and_digest(source: str, local: str) -> None:
    if source.startswith("host/"):
        # `host` without a dot is a Docker Hub namespace, as distribution says
        local = f"{LOCAL}/docker.io/host/a/b:tag@{DIGEST}"
    result, patched = run(pod([source]))
    assert images(patched) == [local]
    assert originals(patched) == {"c0": source}
    assert [r.original for r in result.rewritten] == [source]
    assert references.parse(local).digest == references.parse(source).digest
    assert references.parse(local).tag == references.parse(source).tag


def test_containers_and_all_init_containers_are_rewritten_and_recorded() -> None:
    obj = pod(["acr.io/nf/upf:1.2", "nginx"], init=["busybox:1.36", "acr.io/nf/init:3",
                                                    "quay.io/x/y@" + DIGEST])
    result, patched = run(obj)
    assert images(patched) == [f"{LOCAL}/acr.io/nf/upf:1.2", f"{LOCAL}/docker.io/library/nginx"]
    assert images(patched, "initContainers") == [
        f"{LOCAL}/docker.io/library/busybox:1.36", f"{LOCAL}/acr.io/nf/init:3",
        f"{LOCAL}/quay.io/x/y@{DIGEST}"]
    assert originals(patched) == {"c0": "acr.io/nf/upf:1.2", "c1": "nginx",
                                  "i0": "busybox:1.36", "i1": "acr.io/nf/init:3",
                                  "i2": "quay.io/x/y@" + DIGEST}
    assert {r.kind for r in result.rewritten} == {"containers", "initContainers"}
    # nothing but images and the annotation changed
    for a, b in zip(obj["spec"]["containers"], patched["spec"]["containers"], strict=True):
        assert {k: v for k, v in a.items() if k != "image"} == {
            k: v for k, v in b.items() if k != "image"}


def test_ephemeral_container_update_patches_only_ephemeral_images_and_no_annotation() -> None:
    # the stored pod: already rewritten, annotated; kubectl debug adds an ephemeral container
    _, stored = run(pod(["acr.io/nf/upf:1.2"]))
    stored["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1.36"}]
    result, patched = run(stored, ephemeral_only=True)
    assert [op["path"] for op in result.patch] == ["/spec/ephemeralContainers/0/image"]
    assert images(patched, "ephemeralContainers") == [f"{LOCAL}/docker.io/library/busybox:1.36"]
    assert patched["metadata"]["annotations"] == stored["metadata"]["annotations"]
    # its original is still recoverable from the local name
    local = references.parse(images(patched, "ephemeralContainers")[0])
    assert str(references.from_local(local, LOCAL)) == "docker.io/library/busybox:1.36"


def test_ephemeral_only_leaves_regular_containers_alone() -> None:
    _, patched = run(pod(["acr.io/a:1"], ephemeral=["acr.io/dbg:1"]), ephemeral_only=True)
    assert images(patched) == ["acr.io/a:1"]
    assert images(patched, "ephemeralContainers") == [f"{LOCAL}/acr.io/dbg:1"]


def test_a_second_pass_changes_nothing() -> None:
    first, patched = run(pod(["acr.io/nf/upf:1.2", "nginx"], init=["busybox"],
                             annotations={"team": "nf"}))
    assert first.changed
    second, again = run(patched)
    assert second.patch == []
    assert again == patched
    assert {s.reason for s in second.skipped} == {"already-local"}


def test_an_already_rewritten_image_without_annotation_gets_its_original_recorded() -> None:
    result, patched = run(pod([f"{LOCAL}/acr.io/nf/upf:1.2"]))
    assert images(patched) == [f"{LOCAL}/acr.io/nf/upf:1.2"]
    assert originals(patched) == {"c0": "acr.io/nf/upf:1.2"}
    assert result.rewritten == ()


def test_annotation_is_merged_and_other_annotations_kept() -> None:
    obj = pod(["acr.io/a:1", f"{LOCAL}/acr.io/b:2"],
              annotations={"keep": "me", ANNOTATION: json.dumps({"c1": "acr.io/b:2"})})
    _, patched = run(obj)
    assert patched["metadata"]["annotations"]["keep"] == "me"
    assert originals(patched) == {"c0": "acr.io/a:1", "c1": "acr.io/b:2"}


def test_stale_annotation_entries_are_dropped() -> None:
    # copied from another pod: claims an original for an image pulled from its source
    obj = pod(["acr.io/a:1"], annotations={ANNOTATION: json.dumps({"c0": "x.io/old:1",
                                                                   "gone": "x.io/y:2"})})
    _, patched = run(obj, rules(deny_hosts=["acr.io"]))
    assert images(patched) == ["acr.io/a:1"]
    assert originals(patched) == {}


def test_an_unreadable_annotation_is_replaced_with_a_warning() -> None:
    result, patched = run(pod(["acr.io/a:1"], annotations={ANNOTATION: "not json"}))
    assert originals(patched) == {"c0": "acr.io/a:1"}
    assert any(ANNOTATION in w for w in result.warnings)


def test_pod_without_metadata_gets_the_annotation_map() -> None:
    obj = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "acr.io/a:1"}]}}
    _, patched = run(obj)
    assert originals(patched) == {"c": "acr.io/a:1"}


def test_pod_with_null_annotations() -> None:
    obj = pod(["acr.io/a:1"])
    obj["metadata"]["annotations"] = None
    _, patched = run(obj)
    assert originals(patched) == {"c0": "acr.io/a:1"}


@pytest.mark.parametrize("image", ["", "UPPER/Case:1", "nginx:", "a" * 300 + "!",
                                   "acr.io/a:" + "t" * 129, "nginx@sha256:abc",
                                   "f" * 64, "acr.io//a", " nginx"])
def test_an_invalid_reference_is_left_untouched_and_reported(image: str) -> None:
    result, patched = run(pod([image, "acr.io/ok:1"]))
    assert images(patched) == [image, f"{LOCAL}/acr.io/ok:1"]
    assert [(s.name, s.reason) for s in result.skipped] == [("c0", "invalid-reference")]
    assert len(result.warnings) == 1 and "c0" in result.warnings[0]
    assert originals(patched) == {"c1": "acr.io/ok:1"}


def test_an_ipv6_registry_cannot_be_mapped_and_is_reported() -> None:
    result, patched = run(pod(["[::1]:5000/repo:1"]))
    assert images(patched) == ["[::1]:5000/repo:1"]
    assert [s.reason for s in result.skipped] == ["unmappable"]
    assert result.warnings


def test_a_mapping_over_255_characters_is_reported_not_sent() -> None:
    image = "acr.io/" + "a" * 250
    result, patched = run(pod([image]))
    assert images(patched) == [image]
    assert [s.reason for s in result.skipped] == ["unmappable"]


@pytest.mark.parametrize(("kw", "rewritten"), [
    ({}, ["acr.io", "docker.io", "quay.io"]),
    ({"deny_hosts": ["docker.io"]}, ["acr.io", "quay.io"]),
    ({"allow_hosts": ["*.io"], "deny_hosts": ["quay.*"]}, ["acr.io", "docker.io"]),
    ({"allow_hosts": ["ACR.IO"]}, ["acr.io"]),
    ({"deny_repositories": ["docker.io/library/*"]}, ["acr.io", "quay.io"]),
    ({"allow_repositories": ["acr.io/nf/*", "quay.io/*"]}, ["acr.io", "quay.io"]),
])
def test_source_allow_and_deny_lists(kw: dict[str, list[str]], rewritten: list[str]) -> None:
    result, _ = run(pod(["acr.io/nf/upf:1", "nginx", "quay.io/x/y:2"]), rules(**kw))
    assert sorted(references.parse(r.original).domain for r in result.rewritten) == rewritten
    reasons = {s.reason for s in result.skipped}
    assert reasons <= {"denied-host", "not-allowed-host", "denied-repository",
                       "not-allowed-repository"}


def test_the_local_registry_is_never_a_source() -> None:
    result, _ = run(pod([f"{LOCAL}/anything:1", "EDGE.LOCAL:5000/x/y:1"]))
    assert result.rewritten == ()
    assert {s.reason for s in result.skipped} == {"already-local"}


class Index:
    def __init__(self, available: set[str], *, synced: bool = True) -> None:
        self.available = available
        self.synced = synced

    def phase(self, canonical: str) -> str | None:
        return "Available" if canonical in self.available else "Mirroring"


def test_if_available_rewrites_only_available_sources() -> None:
    index = Index({"docker.io/library/nginx:latest", f"acr.io/nf/upf@{DIGEST}"})
    the_rules = rules(policy="IfAvailable", artifacts=index)
    result, patched = run(pod(["nginx", "acr.io/nf/upf:1.2", f"acr.io/nf/upf@{DIGEST}"]),
                          the_rules)
    assert images(patched) == [f"{LOCAL}/docker.io/library/nginx", "acr.io/nf/upf:1.2",
                               f"{LOCAL}/acr.io/nf/upf@{DIGEST}"]
    assert [s.reason for s in result.skipped] == ["not-available"]
    assert not any(r.by_fallback for r in result.rewritten)


@pytest.mark.parametrize(("fallback", "expected"), [("Always", True), ("Never", False)])
def test_if_available_fallback_while_not_synced(fallback: str, expected: bool) -> None:
    index = Index(set(), synced=False)
    result, patched = run(pod(["nginx"]), rules(policy="IfAvailable", artifacts=index,
                                                fallback=fallback))
    assert (images(patched) == [f"{LOCAL}/docker.io/library/nginx"]) is expected
    if expected:
        assert [r.by_fallback for r in result.rewritten] == [True]
    else:
        assert [s.reason for s in result.skipped] == [mutation.AVAILABILITY_UNKNOWN]


def test_a_pod_without_containers_gets_no_patch() -> None:
    result, patched = run(pod([]))
    assert result.patch == [] and patched == pod([])


# -- properties -----------------------------------------------------------------------------------

_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_host = st.sampled_from(["", "docker.io/", "acr.io/", "my.reg.example:5000/", "localhost/",
                         "localhost:5000/", "10.0.0.1:443/", "Reg.Example.COM/"])
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}", fullmatch=True)
_digest = st.sampled_from(["sha256:" + "0" * 64, DIGEST, "sha512:" + "e" * 128])


@st.composite
def image_refs(draw: st.DrawFn) -> str:
    host, path = draw(_host), draw(st.lists(_component, min_size=1, max_size=3))
    if not host and ("." in path[0] or path[0] == "localhost"):
        # without a host, a first component with a dot IS the registry (`a.b/c`); keep the
        # generated image on Docker Hub as meant
        host = "docker.io/"
    text = host + "/".join(path)
    if draw(st.booleans()):
        text += ":" + draw(_tag)
    if draw(st.booleans()):
        text += "@" + draw(_digest)
    return text


@given(st.lists(image_refs(), min_size=1, max_size=4), st.lists(image_refs(), max_size=3))
def test_rewriting_is_reversible_from_the_annotation_and_keeps_digests(
        containers: list[str], init: list[str]) -> None:
    obj = pod(containers, init=init)
    _, patched = run(obj)
    recorded = originals(patched)
    for kind, prefix, sources in (("containers", "c", containers), ("initContainers", "i", init)):
        for index, (source, image) in enumerate(zip(sources, images(patched, kind),
                                                    strict=True)):
            name = f"{prefix}{index}"
            # the annotation gives back exactly what the pod spec said
            assert recorded[name] == source
            local = references.parse(image)
            original = references.parse(source)
            assert local.digest == original.digest and local.tag == original.tag
            back = references.from_local(local, LOCAL)
            assert (back.path, back.tag, back.digest) == (original.path, original.tag,
                                                          original.digest)
            assert back.domain == original.domain.lower()
    # and a second pass finds nothing to do
    again, _ = run(patched)
    assert again.patch == []


@given(st.lists(image_refs(), min_size=1, max_size=6))
def test_a_plan_spells_what_the_references_module_would(texts: list[str]) -> None:
    # plans reuse a repository's mapping across its tags: the same strings as mapping anew
    the_rules = rules()
    for text in texts + texts:
        plan = the_rules.plan(text)
        source = references.parse(text)
        assert plan.source == source
        assert plan.canonical == references.canonical(text)
        local = references.to_local(source, LOCAL)
        assert plan.local_text == str(local)
