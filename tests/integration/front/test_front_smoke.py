"""First light: a never-seen image pulled through the front with skopeo, then again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clusterregistry_sandbox.images import BuiltImage
from tests.integration.front.conftest import FrontWorld, source_requests
from tests.world.images import BuildImage, PushImage


async def skopeo_copy(src: str, dst_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        "skopeo", "copy", "--src-tls-verify=false", f"docker://{src}", f"dir:{dst_dir}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def test_a_miss_then_a_hit(front_world: FrontWorld, build_image: BuildImage,
                                 push_image: PushImage, tmp_path: Path) -> None:
    image: BuiltImage = build_image("app", layer_sizes=[300_000, 200_000])
    await push_image(image, front_world.store, "nf/app", tag="1.0")
    front = await front_world.start_front()
    local = f"{front.host}/{front_world.store.host.replace(':', '_')}/nf/app:1.0"
    await skopeo_copy(local, tmp_path / "first")
    for blob in image.blobs:
        assert (tmp_path / "first" / blob.digest.split(":")[1]).read_bytes() == \
            image.read_blob(blob.digest)
    gets = source_requests(front_world.store)
    assert gets["/v2/nf/app/manifests/1.0"] == 1
    assert all(gets[f"/v2/nf/app/blobs/{blob.digest}"] == 1 for blob in image.blobs)
    assert front.metric("clusterregistry_front_requests_total", kind="blob",
                        result="miss_streamed") == len(image.blobs)
