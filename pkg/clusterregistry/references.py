"""Image references: the distribution reference grammar, normalisation, and local mapping.

Every service speaks in image references (the webhook rewrites them, the tracker
counts them, the mirror copies them, GC deletes them), so they are parsed once,
here, exactly as the CNCF distribution library parses them (`reference.ParseNormalizedNamed`):

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ domain "/" ] path          (at most 255 characters)
    domain      := host [ ":" port ]            (host: DNS name, IPv4, or [IPv6])
    path        := component ( "/" component )*
    component   := [a-z0-9]+ ( ( [._] | "__" | "-"* ) [a-z0-9]+ )*
    tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex            (sha256: 64, sha384: 96, sha512: 128 lower-case hex)

Normalisation is Docker's: a first component that is not a domain (no `.` or `:`,
not `localhost`, not upper-case) means Docker Hub, `index.docker.io` is `docker.io`,
and a one-component Docker Hub path gets `library/`. A reference without tag or
digest means `:latest` (`with_default_tag`).

The local reference keeps the source host as the first path component, so one
registry can hold images from many sources without collisions:
`myacr.azurecr.io/nf/upf:1.2` is `<local>/myacr.azurecr.io/nf/upf:1.2`. A path
component cannot hold `:`, so a source port is written `host_5000` (`_` can never
appear in a DNS name, so the mapping is reversible); IPv6 hosts cannot be mapped.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import msgspec

# what parse and the mappings raise: part of the error tree, and named here for their callers
from clusterregistry.errors import InvalidReferenceError as InvalidReferenceError  # noqa: PLC0414

DEFAULT_DOMAIN: Final = "docker.io"
LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"
OFFICIAL_REPOSITORY_PREFIX: Final = "library/"
DEFAULT_TAG: Final = "latest"
NAME_TOTAL_LENGTH_MAX: Final = 255
# Not in distribution, whose domain grammar has no length limit: a DNS name has at most 253
# characters, so no pullable reference is longer than about 800 (253 + port + 255 path + 128
# tag + a sha512 digest). Refusing longer text first keeps a hostile pod spec from making the
# backtracking regex below work quadratically on megabytes (the webhook parses every image).
REFERENCE_LENGTH_MAX: Final = 1024

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
# `[-]+`, as distribution has it since 2023: the older `[-]*` matches an empty separator,
# which makes a failing match exponential in a backtracking engine such as Python's
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Go's regexp `$` matches only at the end of the text; Python's also before a final newline,
# so every pattern here is used with `fullmatch`, never `match` with `$`.
_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH}))"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_DOMAIN_ONLY = re.compile(_DOMAIN, re.ASCII)
_PATH_ONLY = re.compile(_PATH, re.ASCII)
_ANCHORED_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_DIGEST_LENGTHS: Final = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_HEX = re.compile(r"[a-f0-9]+")
_PORT_IN_PATH = re.compile(r"(?P<host>.+)_(?P<port>[0-9]+)")


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """A fully normalised reference: `docker.io/library/nginx:latest`."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """`domain/path`: the repository, as a registry client addresses it."""
        return f"{self.domain}/{self.path}"

    @property
    def host(self) -> str:
        """The domain without its port."""
        if self.domain.startswith("["):
            return self.domain[: self.domain.index("]") + 1]
        return self.domain.split(":", 1)[0]

    @property
    def version(self) -> str:
        """What a registry's manifests endpoint takes: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_default_tag(self) -> Reference:
        """`:latest` when neither tag nor digest is given (docker's TagNameOnly)."""
        if self.tag or self.digest:
            return self
        return Reference(domain=self.domain, path=self.path, tag=DEFAULT_TAG)

    def familiar(self) -> str:
        """The short form people type: `nginx:latest` for `docker.io/library/nginx:latest`."""
        name = self.name
        first = self.path.split("/", 1)[0]
        # `docker.io/a.b/c` must keep its domain: `a.b/c` would read back as registry `a.b`
        # (distribution's FamiliarName drops it anyway, and so cannot round-trip this one)
        if self.domain == DEFAULT_DOMAIN and "." not in first and first != "localhost":
            name = self.path
            if name.startswith(OFFICIAL_REPOSITORY_PREFIX) and name.count("/") == 1:
                name = name[len(OFFICIAL_REPOSITORY_PREFIX):]
        text = name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _validate_digest(digest: str) -> None:
    algorithm, _, hex_part = digest.partition(":")
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReferenceError(f"unsupported digest algorithm {algorithm!r}")
    if len(hex_part) != expected:
        raise InvalidReferenceError("invalid checksum digest length")
    if not _DIGEST_HEX.fullmatch(hex_part):
        raise InvalidReferenceError("invalid checksum digest format")


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: which part of a name is the registry."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPOSITORY_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """A normalised reference from what a pod spec says; `InvalidReferenceError` when invalid.

    Exactly `parse_whole` (distribution's grammar), only cheaper for the common case. The
    grammar is `name [":" tag] ["@" digest]` and neither tag nor digest can hold `/` or
    `@`, so the text splits into its three parts without parsing; the name, which repeats
    across a cluster's images (a new version of a workload is a new tag of a known
    repository), is parsed by the full grammar once and remembered. Tag and digest are
    checked with their own patterns. Anything the fast path does not accept outright goes
    to `parse_whole`, so an invalid reference gets distribution's error message.
    """
    if 0 < len(text) <= REFERENCE_LENGTH_MAX:
        rest, at, digest = text.partition("@")
        colon = rest.rfind(":")
        tagged = colon > rest.rfind("/")
        name, tag = (rest[:colon], rest[colon + 1:]) if tagged else (rest, "")
        named = _names.get(name)
        if named is None:
            named = _parse_name(name)
        # `nginx:` and `nginx@` are invalid: a separator needs what it separates
        if (named is not None and (not tagged or _TAG_ONLY.fullmatch(tag))
                and (not at or _digest_valid(digest))):
            return Reference(domain=named.domain, path=named.path, tag=tag, digest=digest)
    return parse_whole(text)


# name text -> its parse without tag or digest; only valid names are kept, so the size of
# the map is bounded by the images a cluster really uses (and cleared past a ceiling)
_names: dict[str, Reference] = {}
_NAMES_MAX: Final = 8192
_TAG_ONLY = re.compile(_TAG, re.ASCII)
_DIGEST_ONLY = re.compile(_DIGEST, re.ASCII)


def _parse_name(name: str) -> Reference | None:
    # `name` alone must be a whole valid reference without tag and digest; a 64-hex name
    # is refused by parse_whole, as distribution refuses it
    if not name or (len(name) == 64 and _ANCHORED_IDENTIFIER.fullmatch(name)):
        return None
    try:
        named = parse_whole(name)
    except InvalidReferenceError:
        return None
    if named.tag or named.digest:  # cannot happen for a split name; never cache a surprise
        return None
    if len(_names) >= _NAMES_MAX:
        _names.clear()
    _names[name] = named
    return named


def _digest_valid(digest: str) -> bool:
    if not _DIGEST_ONLY.fullmatch(digest):
        return False
    try:
        _validate_digest(digest)
    except InvalidReferenceError:
        return False
    return True


def parse_whole(text: str) -> Reference:
    """distribution's ParseNormalizedNamed step by step, on the whole text.

    Split the registry off the whole text (splitDockerDomain), require a lower-case
    repository, then parse `domain/remainder` with the anchored grammar (Parse); the
    255-character limit applies to the path, not the domain. Tag and digest are kept as
    given: no `:latest` is added (see `with_default_tag`).
    """
    if not text:
        raise InvalidReferenceError("repository name must have at least one component")
    if len(text) > REFERENCE_LENGTH_MAX:
        raise InvalidReferenceError(
            f"invalid reference format: longer than {REFERENCE_LENGTH_MAX} characters")
    if _ANCHORED_IDENTIFIER.fullmatch(text):
        raise InvalidReferenceError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReferenceError(
            f"invalid reference format: repository name ({remote}) must be lowercase")
    full = f"{domain}/{remainder}"
    match = _REFERENCE.fullmatch(full)
    if match is None:
        lowered = full.lower()
        if lowered != full and _REFERENCE.fullmatch(lowered):
            raise InvalidReferenceError("repository name must be lowercase")
        raise InvalidReferenceError("invalid reference format")
    path = match.group("path")
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if match.group("domain") is None:
        # `a_b.c/x`: splitDockerDomain takes `a_b.c` for a registry, which the domain grammar
        # then refuses, so distribution returns a name without a domain; no runtime can pull
        # that, and no mapping can keep it apart from Docker Hub: refuse it here
        raise InvalidReferenceError(f"invalid reference format: {domain!r} is not a registry host")
    digest = match.group("digest") or ""
    if digest:
        _validate_digest(digest)
    return Reference(domain=match.group("domain"), path=path, tag=match.group("tag") or "",
                     digest=digest)


def is_valid(text: str) -> bool:
    try:
        parse(text)
    except InvalidReferenceError:
        return False
    return True


def _host_component(domain: str) -> str:
    """The source domain as one path component: lower-case, `:port` as `_port`."""
    if domain.startswith("["):
        raise InvalidReferenceError(
            f"an IPv6 registry host ({domain}) cannot be mapped to a local path")
    host, _, port = domain.partition(":")
    if not port and "." not in host and host.lower() != "localhost":
        # `UPPER/x` is a registry called UPPER to distribution, but `upper/x` would read
        # back as Docker Hub's `upper/x`: refuse rather than map it ambiguously
        raise InvalidReferenceError(f"registry host {domain!r} cannot be mapped to a local path")
    component = host.lower() + (f"_{port}" if port else "")
    if not _PATH_ONLY.fullmatch(component):
        raise InvalidReferenceError(f"registry host {domain!r} cannot be mapped to a local path")
    return component


def to_local(source: Reference, local_registry: str) -> Reference:
    """Where `source` lives in the local registry; keeps tag and digest exactly.

    `InvalidReferenceError` when the mapped name would be invalid (IPv6 host, a path over 255
    characters, which distribution refuses).
    """
    path = f"{_host_component(source.domain)}/{source.path}"
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(
            f"the local name for {source} would be longer than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    return Reference(domain=local_registry, path=path, tag=source.tag, digest=source.digest)


def is_local(reference: Reference, local_registry: str) -> bool:
    return reference.domain.lower() == local_registry.lower()


def from_local(local: Reference, local_registry: str) -> Reference:
    """The source a local reference was mapped from (the inverse of `to_local`)."""
    if not is_local(local, local_registry):
        raise InvalidReferenceError(f"{local} is not in the local registry {local_registry}")
    first, sep, rest = local.path.partition("/")
    if not sep:
        raise InvalidReferenceError(f"{local} does not name a source registry")
    port_match = _PORT_IN_PATH.fullmatch(first)
    domain = f"{port_match['host']}:{port_match['port']}" if port_match else first
    if "." not in domain and ":" not in domain and domain != "localhost":
        raise InvalidReferenceError(f"{local} does not name a source registry")
    return Reference(domain=domain, path=rest, tag=local.tag, digest=local.digest)


def artifact_name(source: Reference) -> str:
    """The Artifact's Kubernetes name for a source reference: readable, unique, stable.

    A DNS label-like name (`[a-z0-9-]`, at most 63 characters, no dots, so it is also a
    NATS subject token): a readable prefix from the reference and 12 hex characters of
    the sha256 of the full normalised reference, so distinct references never collide.
    """
    full = str(source.with_default_tag())
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    readable = f"{source.host}-{source.path}-{source.tag or ('' if source.digest else DEFAULT_TAG)}"
    readable = re.sub(r"[^a-z0-9]+", "-", readable.lower()).strip("-")[:50].rstrip("-")
    return f"{readable}-{digest}" if readable else digest


def canonical(text: str) -> str:
    """The one spelling of a source image every service uses as a key.

    Normalised, with `:latest` when neither tag nor digest is given, so `nginx`,
    `docker.io/library/nginx` and `index.docker.io/library/nginx:latest` are one image.
    """
    return str(parse(text).with_default_tag())
