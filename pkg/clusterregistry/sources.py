"""Which images are sources: the webhook rewrites them, the front fetches them on a miss.

Every registry but the local one is a source unless allow lists say otherwise;
deny lists win. Hosts match by glob in lower case (DNS), repositories by glob as
written. One definition for both services, so the front never fetches an image
the webhook would not have rewritten.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Final

from clusterregistry import references
from clusterregistry.references import Reference

# per-image skip reasons (also the `reason` label of the skipped-images metric)
LOCAL: Final = "already-local"
DENIED_HOST: Final = "denied-host"
NOT_ALLOWED_HOST: Final = "not-allowed-host"
DENIED_REPOSITORY: Final = "denied-repository"
NOT_ALLOWED_REPOSITORY: Final = "not-allowed-repository"


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for a list of shell globs (`*` also crosses `/`), matched case-sensitively."""
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


class SourceRules:
    """Which registries and repositories are sources to rewrite."""

    def __init__(self, local_registry: str, *, allow_hosts: Sequence[str] = (),
                 deny_hosts: Sequence[str] = (), allow_repositories: Sequence[str] = (),
                 deny_repositories: Sequence[str] = ()) -> None:
        self.local_registry = local_registry
        # hosts are case-insensitive (DNS): host globs compare in lower case
        self._allow_hosts = _globs([h.lower() for h in allow_hosts])
        self._deny_hosts = _globs([h.lower() for h in deny_hosts])
        self._allow_repositories = _globs(allow_repositories)
        self._deny_repositories = _globs(deny_repositories)

    def skip_reason(self, source: Reference) -> str | None:
        """None when `source` is to be rewritten, else why not."""
        if references.is_local(source, self.local_registry):
            return LOCAL
        host = source.domain.lower()
        if self._deny_hosts is not None and self._deny_hosts.match(host):
            return DENIED_HOST
        if self._allow_hosts is not None and not self._allow_hosts.match(host):
            return NOT_ALLOWED_HOST
        repository = f"{host}/{source.path}"
        if self._deny_repositories is not None and self._deny_repositories.match(repository):
            return DENIED_REPOSITORY
        if (self._allow_repositories is not None
                and not self._allow_repositories.match(repository)):
            return NOT_ALLOWED_REPOSITORY
        return None
