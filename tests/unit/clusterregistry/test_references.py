"""The image reference grammar, held to the CNCF distribution library's own test cases.

The tables below are data transcribed from github.com/distribution/reference
(`reference_test.go`: TestReferenceParse, TestWithNameFailure, TestDomainAndPath,
TestSerialization; `normalize_test.go`: TestValidateReferenceName, TestValidateRemoteName,
TestParseRepositoryInfo, TestParseReferenceWithTagAndDigest, TestInvalidReferenceComponents,
TestParseAnyReference, TestNormalizedSplitHostname, TestParseDockerRef). `references.parse`
is distribution's `ParseNormalizedNamed` (what a container runtime does with a pod's image),
so cases written for the un-normalised `Parse` are checked through their normalised meaning:
the same validity, tag and digest, and `familiar()` giving the input back (distribution's
`FamiliarString`). Where a case depends on something other than the grammar, the row says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterregistry import references
from clusterregistry.references import InvalidReferenceError, Reference

FF64 = "f" * 64
DIGEST = f"sha256:{FF64}"

# -- reference_test.go: TestReferenceParse ------------------------------------------------------
# (input, valid, tag, digest); for a valid input, familiar() must give the input back
REFERENCE_PARSE: list[tuple[str, bool, str, str]] = [
    ("test_com", True, "", ""),
    ("test.com:tag", True, "tag", ""),
    ("test.com:5000", True, "5000", ""),
    ("test.com/repo:tag", True, "tag", ""),
    ("test:5000/repo", True, "", ""),
    ("test:5000/repo:tag", True, "tag", ""),
    (f"test:5000/repo@{DIGEST}", True, "", DIGEST),
    (f"test:5000/repo:tag@{DIGEST}", True, "tag", DIGEST),
    ("", False, "", ""),
    (":justtag", False, "", ""),
    (f"@{DIGEST}", False, "", ""),
    ("repo@sha256:" + "f" * 34, False, "", ""),  # digest.ErrDigestInvalidLength
    (f"validname@invaliddigest:{FF64}", False, "", ""),  # digest.ErrDigestUnsupported
    ("Uppercase:tag", False, "", ""),
    ("test:5000/Uppercase/lowercase:tag", False, "", ""),
    ("lowercase:Uppercase", True, "Uppercase", ""),
    ("domain/" + "a" * 256 + ":tag", False, "", ""),  # ErrNameTooLong
    ("a/" * 127 + "a:tag-puts-this-over-max", True, "tag-puts-this-over-max", ""),
    ("aa/asdf$$^/aa", False, "", ""),
    ("sub-dom1.foo.com/bar/baz/quux", True, "", ""),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", True, "some-long-tag", ""),
    ("b.gcr.io/test.example.com/my-app:test.example.com", True, "test.example.com", ""),
    ("xn--n3h.com/myimage:xn--n3h.com", True, "xn--n3h.com", ""),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{DIGEST}", True, "xn--7o8h.com", DIGEST),
    ("foo_bar.com:8080", True, "8080", ""),
    ("foo/foo_bar.com:8080", True, "8080", ""),
    ("192.168.1.1", True, "", ""),
    ("192.168.1.1:tag", True, "tag", ""),
    ("192.168.1.1:5000", True, "5000", ""),
    ("192.168.1.1/repo", True, "", ""),
    ("192.168.1.1:5000/repo", True, "", ""),
    ("192.168.1.1:5000/repo:5050", True, "5050", ""),
    ("[2001:db8::1]", False, "", ""),
    ("[2001:db8::1]:5000", False, "", ""),
    ("[2001:db8::1]:tag", False, "", ""),
    ("[2001:db8::1]/repo", True, "", ""),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", True, "tag", ""),
    ("[2001:db8::1]:5000/repo", True, "", ""),
    ("[2001:db8::1]:5000/repo:tag", True, "tag", ""),
    (f"[2001:db8::1]:5000/repo@{DIGEST}", True, "", DIGEST),
    (f"[2001:db8::1]:5000/repo:tag@{DIGEST}", True, "tag", DIGEST),
    ("[2001:db8::]:5000/repo", True, "", ""),
    ("[::1]:5000/repo", True, "", ""),
    ("[fe80::1%eth0]:5000/repo", False, "", ""),
    ("[fe80::1%@invalidzone]:5000/repo", False, "", ""),
    ("example.com/" + "a" * 255 + ":tag", True, "tag", ""),
]

# distribution's test binary registers only sha256, so it expects ErrDigestUnsupported for a
# sha512 digest; every container runtime registers sha512 (go-digest's crypto/sha512), and so
# does this grammar: the row is kept with the runtime's answer.
SHA512_ROW = ("validname@sha512:" + "f" * 128, True, "", "sha512:" + "f" * 128)

# (input, expected error text) for the error kinds distribution distinguishes
ERROR_MESSAGES: list[tuple[str, str]] = [
    ("", "at least one component"),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    (f"validname@invaliddigest:{FF64}", "unsupported digest algorithm"),
    ("Uppercase:tag", "must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "must be lowercase"),
    ("domain/" + "a" * 256 + ":tag", "not be more than 255 characters"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
     "cannot specify 64-byte hexadecimal strings"),
]

# -- reference_test.go: TestWithNameFailure (names without tag or digest) ----------------------
WITH_NAME_FAILURE = [
    "",
    ":justtag",
    f"@{DIGEST}",
    "example.com/" + "a" * 256,
    "aa/asdf$$^/aa",
]

# -- reference_test.go: TestDomainAndPath, normalize_test.go: TestNormalizedSplitHostname ------
# (input, domain, path) after normalisation
SPLIT_HOSTNAME = [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "docker.io", "test_com/foo"),
    ("test:8080/foo", "test:8080", "foo"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("docker/migrator", "docker.io", "docker/migrator"),
    ("foo", "docker.io", "library/foo"),
    ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
]

# -- reference_test.go: TestSerialization (input, name, tag, digest) ---------------------------
SERIALIZATION = [
    ("example.com:8000/named", "example.com:8000/named", "", ""),
    ("example.com:8000/named:tagged", "example.com:8000/named", "tagged", ""),
    ("other.com/named@sha256:1234567890098765432112345667890098765432112345667890098765432112",
     "other.com/named", "",
     "sha256:1234567890098765432112345667890098765432112345667890098765432112"),
]

# -- normalize_test.go: TestValidateReferenceName ----------------------------------------------
VALID_REFERENCE_NAMES = [
    "docker/docker",
    "library/debian",
    "debian",
    "localhost/library/debian",
    "localhost/debian",
    "LOCALDOMAIN/library/debian",
    "LOCALDOMAIN/debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "Docker/docker",
    "DOCKER/docker",
]
INVALID_REFERENCE_NAMES = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
]

# -- normalize_test.go: TestValidateRemoteName -------------------------------------------------
VALID_REMOTE_NAMES = [
    "docker/docker",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]
INVALID_REMOTE_NAMES = [
    "docker/Docker",
    "docker///docker",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "-docker/docker",
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_"
    "namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_"
    "lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_"
    "255/docker",
]

# -- normalize_test.go: TestParseRepositoryInfo ------------------------------------------------
# (remote name, familiar name, full name, ambiguous name, domain)
REPOSITORY_INFO = [
    ("fooo", "localhost/fooo", "localhost/fooo", "localhost/fooo", "localhost"),
    ("fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost"),
    ("fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN"),
    ("fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar",
     "LOCALDOMAIN"),
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "", "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", "", "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase",
     "", "127.0.0.1:8000"),
    ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "",
     "127.0.0.1:8000"),
    ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", "",
     "example.com"),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", "", "example.com"),
    ("private/moonbase", "example.com:8000/private/moonbase",
     "example.com:8000/private/moonbase", "", "example.com:8000"),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", "",
     "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     "index.docker.io/library/ubuntu-12.04-base", "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", "", "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", "", "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", "", "Foo"),
    ("bar", "FOO/bar", "FOO/bar", "", "FOO"),
]

# -- normalize_test.go: TestParseAnyReference (the named rows; the others are digests alone,
# which a pod's image cannot be) -----------------------------------------------------------
REDIS_DIGEST = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
ANY_REFERENCE = [
    ("redis", "docker.io/library/redis"),
    ("redis:latest", "docker.io/library/redis:latest"),
    ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
    (f"redis@{REDIS_DIGEST}", f"docker.io/library/redis@{REDIS_DIGEST}"),
    (f"docker.io/library/redis@{REDIS_DIGEST}", f"docker.io/library/redis@{REDIS_DIGEST}"),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp"),
    ("dmcgowan/myapp:latest", "docker.io/dmcgowan/myapp:latest"),
    ("docker.io/mcgowan/myapp:latest", "docker.io/mcgowan/myapp:latest"),
    (f"dmcgowan/myapp@{REDIS_DIGEST}", f"docker.io/dmcgowan/myapp@{REDIS_DIGEST}"),
    (f"docker.io/dmcgowan/myapp@{REDIS_DIGEST}", f"docker.io/dmcgowan/myapp@{REDIS_DIGEST}"),
    ("dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
     "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9"),
    ("dbcc1", "docker.io/library/dbcc1"),
]

# -- normalize_test.go: TestParseDockerRef (name, input, expected) -----------------------------
# ParseDockerRef adds :latest like `with_default_tag`; it also drops the tag of a tag+digest
# reference, which `references` deliberately does not (the tag is kept through the rewrite,
# the digest decides what is pulled); that row is checked separately.
BUSYBOX_DIGEST = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
DOCKER_REF = [
    ("nothing", "busybox", "docker.io/library/busybox:latest"),
    ("tag only", "busybox:latest", "docker.io/library/busybox:latest"),
    ("digest only", f"busybox@{BUSYBOX_DIGEST}", f"docker.io/library/busybox@{BUSYBOX_DIGEST}"),
    ("path only", "library/busybox", "docker.io/library/busybox:latest"),
    ("hostname only", "docker.io/busybox", "docker.io/library/busybox:latest"),
    ("no tag", "docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("no path", "docker.io/busybox:latest", "docker.io/library/busybox:latest"),
    ("no hostname", "library/busybox:latest", "docker.io/library/busybox:latest"),
    ("full reference with tag", "docker.io/library/busybox:latest",
     "docker.io/library/busybox:latest"),
    ("gcr reference without tag", "gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
]


@pytest.mark.parametrize(("text", "valid", "tag", "digest"), [*REFERENCE_PARSE, SHA512_ROW],
                         ids=lambda v: str(v)[:60] if isinstance(v, str) else None)
def test_distribution_reference_parse_cases(text: str, valid: bool, tag: str, digest: str) -> None:
    if not valid:
        with pytest.raises(InvalidReferenceError):
            references.parse(text)
        assert not references.is_valid(text)
        return
    ref = references.parse(text)
    assert (ref.tag, ref.digest) == (tag, digest)
    assert ref.familiar() == text  # distribution's FamiliarString round trip
    assert references.parse(str(ref)) == ref  # the normalised form parses to itself


@pytest.mark.parametrize(("text", "message"), ERROR_MESSAGES)
def test_errors_say_what_distribution_says(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        references.parse(text)


@pytest.mark.parametrize("text", WITH_NAME_FAILURE)
def test_distribution_with_name_failures(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        references.parse(text)


@pytest.mark.parametrize(("text", "domain", "path"), SPLIT_HOSTNAME)
def test_distribution_split_hostname(text: str, domain: str, path: str) -> None:
    ref = references.parse(text)
    assert (ref.domain, ref.path) == (domain, path)


@pytest.mark.parametrize(("text", "name", "tag", "digest"), SERIALIZATION)
def test_distribution_serialization_cases(text: str, name: str, tag: str, digest: str) -> None:
    ref = references.parse(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("text", VALID_REFERENCE_NAMES + VALID_REMOTE_NAMES)
def test_distribution_valid_names(text: str) -> None:
    assert references.is_valid(text), text


@pytest.mark.parametrize("text", INVALID_REFERENCE_NAMES + INVALID_REMOTE_NAMES,
                         ids=lambda v: v[:60])
def test_distribution_invalid_names(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        references.parse(text)


@pytest.mark.parametrize(("remote", "familiar", "full", "ambiguous", "domain"), REPOSITORY_INFO)
def test_distribution_repository_info(remote: str, familiar: str, full: str, ambiguous: str,
                                      domain: str) -> None:
    for text in filter(None, (familiar, full, ambiguous)):
        ref = references.parse(text)
        assert ref.familiar() == familiar, text
        assert str(ref) == full, text
        assert ref.domain == domain, text
        assert ref.path == remote, text


def test_distribution_tag_and_digest() -> None:
    short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    ref = references.parse(short)
    assert str(ref) == "docker.io/library/" + short
    assert ref.tag == "latest"
    assert ref.digest.startswith("sha256:86e0e0")
    assert ref.familiar() == short


def test_distribution_invalid_components() -> None:
    with pytest.raises(InvalidReferenceError):
        references.parse("-foo")
    assert references.is_valid("busybox")
    assert not references.is_valid("busybox:-foo")  # WithTag(ref, "-foo")
    assert not references.is_valid("busybox@foo")  # WithDigest(ref, "foo")


@pytest.mark.parametrize(("text", "equivalent"), ANY_REFERENCE)
def test_distribution_any_reference(text: str, equivalent: str) -> None:
    assert str(references.parse(text)) == equivalent


@pytest.mark.parametrize(("name", "text", "expected"), DOCKER_REF)
def test_distribution_docker_ref(name: str, text: str, expected: str) -> None:
    assert references.canonical(text) == expected, name


def test_tag_and_digest_keep_both_unlike_parse_docker_ref() -> None:
    text = f"gcr.io/library/busybox:latest@{BUSYBOX_DIGEST}"
    assert references.canonical(text) == text


# -- beyond distribution's tables: Python's regex dialect, and the mapping to the local name ---

@pytest.mark.parametrize("text", ["nginx\n", "nginx:1.25\n", f"nginx@{DIGEST}\n",
                                  "f" * 64 + "\n", " nginx", "nginx ", "nginx:1.25 ",
                                  "ng\u0131nx", "nginx:\uff11"])
def test_trailing_newline_whitespace_and_non_ascii_are_invalid(text: str) -> None:
    # Go's `$` never matches before a final newline, and `\w` is ASCII there
    with pytest.raises(InvalidReferenceError):
        references.parse(text)


def test_upper_case_hex_in_a_digest_is_invalid() -> None:
    with pytest.raises(InvalidReferenceError, match="invalid checksum digest format"):
        references.parse("nginx@sha256:" + "F" * 64)


@pytest.mark.parametrize(("source", "local"), [
    ("nginx", "edge:5000/docker.io/library/nginx"),
    ("nginx:1.25", "edge:5000/docker.io/library/nginx:1.25"),
    (f"acr.io/nf/upf:1.2@{DIGEST}", f"edge:5000/acr.io/nf/upf:1.2@{DIGEST}"),
    (f"acr.io/nf/upf@{DIGEST}", f"edge:5000/acr.io/nf/upf@{DIGEST}"),
    ("localhost:5000/a", "edge:5000/localhost_5000/a"),
    ("localhost/a", "edge:5000/localhost/a"),
    ("Registry.Example.com:443/team/app:v1", "edge:5000/registry.example.com_443/team/app:v1"),
    ("192.168.1.1:5000/repo:5050", "edge:5000/192.168.1.1_5000/repo:5050"),
])
def test_local_mapping_and_its_inverse(source: str, local: str) -> None:
    ref = references.parse(source)
    mapped = references.to_local(ref, "edge:5000")
    assert str(mapped) == local
    assert references.is_local(mapped, "edge:5000")
    back = references.from_local(references.parse(local), "edge:5000")
    # the host is lower-cased by the mapping (a path component cannot hold upper case)
    assert back == Reference(domain=ref.domain.lower(), path=ref.path, tag=ref.tag,
                             digest=ref.digest)


@pytest.mark.parametrize("source", ["[::1]:5000/repo", "UPPER/x"])
def test_sources_that_cannot_be_mapped_say_so(source: str) -> None:
    with pytest.raises(InvalidReferenceError, match="cannot be mapped"):
        references.to_local(references.parse(source), "edge:5000")


def test_a_local_name_over_255_is_refused() -> None:
    source = references.parse("example.com/" + "a" * 250)  # its own path: 250 characters
    with pytest.raises(InvalidReferenceError, match="longer than 255"):
        references.to_local(source, "edge:5000")


def test_canonical_is_one_spelling() -> None:
    forms = ["nginx", "docker.io/library/nginx", "index.docker.io/library/nginx:latest",
             "library/nginx:latest", "docker.io/nginx"]
    assert {references.canonical(f) for f in forms} == {"docker.io/library/nginx:latest"}


def test_artifact_names_are_dns_labels_and_distinct() -> None:
    names = {references.artifact_name(references.parse(t)) for t in
             ["nginx", "nginx:1", f"nginx@{DIGEST}", "acr.io/nf/upf:1.2", "acr.io/nf/upf:1.3",
              "example.com/" + "a" * 200]}
    assert len(names) == 6
    for name in names:
        assert len(name) <= 63
        assert name.replace("-", "").isalnum() and name == name.lower()


# -- properties ---------------------------------------------------------------------------------

_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_hosts = st.sampled_from(["docker.io", "acr.io", "my.registry.example", "localhost",
                          "localhost:5000", "10.0.0.7:443", "Reg.Example.COM"])
_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digests = st.from_regex(r"[a-f0-9]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")


@st.composite
def valid_references(draw: st.DrawFn) -> str:
    host = draw(_hosts)
    path = "/".join(draw(st.lists(_component, min_size=1, max_size=3)))
    text = f"{host}/{path}"
    if draw(st.booleans()):
        text += ":" + draw(_tags)
    if draw(st.booleans()):
        text += "@" + draw(_digests)
    return text


@given(valid_references())
def test_parse_print_parse_is_stable(text: str) -> None:
    ref = references.parse(text)
    assert references.parse(str(ref)) == ref
    assert references.parse(ref.familiar()) == ref


@given(valid_references())
def test_to_local_is_reversible(text: str) -> None:
    ref = references.parse(text)
    local = references.to_local(ref, "edge.local:5000")
    assert references.parse(str(local)) == local
    back = references.from_local(references.parse(str(local)), "edge.local:5000")
    assert (back.domain, back.path, back.tag, back.digest) == (
        ref.domain.lower(), ref.path, ref.tag, ref.digest)


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_reference_error(text: str) -> None:
    try:
        ref = references.parse(text)
    except InvalidReferenceError as exc:
        assert str(exc)  # says why
    else:
        assert references.parse(str(ref)) == ref


def test_text_longer_than_any_pullable_reference_is_refused_first() -> None:
    with pytest.raises(InvalidReferenceError, match="longer than 1024"):
        references.parse("a" * 2000)


def test_a_failing_match_does_not_backtrack_exponentially() -> None:
    # with an empty-able separator (`[-]*`, distribution's grammar before 2023) this input
    # takes 2**60 steps in a backtracking engine; it must fail at once
    with pytest.raises(InvalidReferenceError):
        references.parse("a" * 60 + "!")
    with pytest.raises(InvalidReferenceError):
        references.parse("f" * 64 + "\n")


# -- the fast path is the whole grammar ---------------------------------------------------------

def _outcome(parse: Any, text: str) -> Reference | str:
    try:
        return parse(text)  # type: ignore[no-any-return]
    except InvalidReferenceError as exc:
        return f"error: {exc}"


# the alphabet where the grammar's decisions are: separators, case, hex, ports
_near_grammar = st.text(alphabet="aA0f:/@._-+ ", max_size=40) | st.builds(
    lambda ref, noise: ref + noise, valid_references(),
    st.sampled_from(["", ":", "@", "/", ":x", "@sha256:", ":A:b", "/X", ".", "@sha256:ab"]))


@settings(max_examples=400)
@given(_near_grammar)
def test_parse_is_parse_whole_on_text_near_the_grammar(text: str) -> None:
    # twice: the second call meets the name cache the first one may have filled
    assert _outcome(references.parse, text) == _outcome(references.parse_whole, text)
    assert _outcome(references.parse, text) == _outcome(references.parse_whole, text)


@given(st.text(max_size=60))
def test_parse_is_parse_whole_on_any_text(text: str) -> None:
    assert _outcome(references.parse, text) == _outcome(references.parse_whole, text)


@pytest.mark.parametrize("text", [row[0] for row in REFERENCE_PARSE] + [
    "localhost:5000", "localhost:5000@sha256:" + "a" * 64, "a" * 64, "a" * 64 + ":tag",
    "Foo/bar:tag", "docker.io/Foo", "host:5000/a:b:c", "a/b@sha256:" + "A" * 64,
    "a@md5:" + "0" * 32, "a:" + "t" * 129, "a/" + "b" * 260, "nginx:latest@", "nginx@",
    "nginx:", "acr.io/a:", "acr.io:5000/a:", "a:@sha256:" + "a" * 64, "a::b", "a:b:"])
def test_parse_is_parse_whole_on_distribution_cases(text: str) -> None:
    assert _outcome(references.parse, text) == _outcome(references.parse_whole, text)
