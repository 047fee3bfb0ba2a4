"""What a registry API request asks for, and which source a local name stands for.

Pure: the front's handlers parse every request with `parse` and decide hit or
miss with `source_of`. distribution's routes put the repository name, which may
hold slashes, before a fixed verb (`/v2/<name>/manifests/<reference>`), so a
path is read from its end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from clusterregistry import references
from clusterregistry.errors import InvalidReferenceError
from clusterregistry.references import Reference
from clusterregistry.sources import SourceRules

Kind = Literal["manifest", "blob", "upload", "other"]

_ROUTE: Final = re.compile(
    r"^/v2/(?P<name>.+?)/(?:(?P<kind>manifests|blobs)/(?P<reference>[^/]+)"
    r"|(?P<upload>blobs/uploads)(?:/.*)?)$")
_DIGEST: Final = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


@dataclass(frozen=True)
class Target:
    """One request's object: `name` is the repository in the local registry."""

    kind: Kind
    name: str = ""
    reference: str = ""  # a tag or digest for manifests, a digest for blobs

    @property
    def by_digest(self) -> bool:
        return bool(_DIGEST.match(self.reference))


def parse(path: str) -> Target:
    match = _ROUTE.match(path)
    if match is None:
        return Target("other")
    if match["upload"]:
        return Target("upload", match["name"])
    kind: Kind = "manifest" if match["kind"] == "manifests" else "blob"
    return Target(kind, match["name"], match["reference"])


def source_of(target: Target, *, local_registry: str, rules: SourceRules) -> Reference | None:
    """The source image a local manifest or blob was mapped from, when the webhook's
    rules make it a source; None when the name maps to no allowed source."""
    if target.kind not in ("manifest", "blob"):
        return None
    by_digest = target.by_digest
    if target.kind == "blob" and not by_digest:
        return None
    try:
        local = references.parse(
            f"{local_registry}/{target.name}"
            + (f"@{target.reference}" if by_digest else f":{target.reference}"))
        source = references.from_local(local, local_registry)
    except InvalidReferenceError:
        return None
    if rules.skip_reason(source) is not None:
        return None
    return source
