"""Where distribution's filesystem storage keeps a blob, so the front can serve hits from disk.

Streaming a hit through Python costs about a CPU-second per GiB (`python -m
bench front`); the kernel's sendfile costs nearly nothing. When the front
mounts the registry's volume (`front.storagePath`, read-only) it serves a blob
GET as distribution would, from distribution's own layout
(docs/storage-drivers and registry/storage/paths.go): the data at
`blobs/<algo>/<2 hex>/<hex>/data`, and a repository may serve it only while its
layer link `repositories/<name>/_layers/<algo>/<hex>/link` exists (that is
what distribution checks too). Anything else (no link, no data, no volume)
goes to distribution as before; a blob deleted by a sweep while being sent
stays readable through the open file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

_ROOT: Final = Path("docker/registry/v2")
_SHA256: Final = re.compile(r"^sha256:([0-9a-f]{64})$")


def blob_data(storage: Path, *, name: str, digest: str) -> Path | None:
    """The file holding `digest` if the repository `name` links it; None otherwise."""
    match = _SHA256.match(digest)
    if match is None or ".." in name.split("/"):
        return None
    hex_ = match[1]
    root = storage / _ROOT
    link = root / "repositories" / name / "_layers" / "sha256" / hex_ / "link"
    data = root / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
    try:
        if link.read_text().strip() != digest:
            return None
    except OSError:
        return None
    return data if data.is_file() else None
