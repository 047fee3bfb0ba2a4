"""Push a built image straight through the registry API: for tests and benches at scale.

skopeo is the independent client the tests check results with, but it spawns
a process per image; a GC bench fills a registry with a thousand images, so it
pushes with clusterregistry's own registry client instead: blobs the registry
lacks, then child manifests by digest, then the top manifest under its tag.
"""

from __future__ import annotations

from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.images import BuiltImage

__all__ = ["upload"]


async def upload(client: RegistryClient, image: BuiltImage, repository: str,
                 tag: str | None = None) -> str:
    """Push `image` to `repository:tag` (default: the image's tag); returns its top digest."""
    for blob in image.blobs:
        if await client.head_blob(repository, blob.digest) is not None:
            continue
        _, location = await client.start_upload(repository)
        await client.put_blob(location, repository=repository, digest=blob.digest,
                              size=blob.size, body=image.read_blob(blob.digest))
    if image.is_index:
        for manifest in image.manifests:
            await client.put_manifest(repository, manifest.digest,
                                      media_type=manifest.media_type,
                                      data=image.read_blob(manifest.digest))
    await client.put_manifest(repository, tag or image.tag, media_type=image.media_type,
                              data=image.read_blob(image.digest))
    return image.digest
