"""clusterregistry reconciler: one Artifact per source image, mirror requests, true statuses."""

import argparse
import asyncio
import sys

from clusterregistry import config
from clusterregistry.reconciler.serving import serve
from clusterregistry.runtime import lifecycle, logs


def main() -> int:
    parser = argparse.ArgumentParser(prog="reconciler", description=__doc__)
    parser.add_argument("--config", default=None, help="settings YAML (the ConfigMap)")
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or in-cluster")
    parser.add_argument("--identity", default=None,
                        help="names this reconciler's Artifact-event consumer (one per replica)")
    args = parser.parse_args()

    async def main_(stop: asyncio.Event) -> None:
        settings = config.load(args.config)
        logs.configure()
        await serve(settings, stop, kubeconfig=args.kubeconfig, identity=args.identity)

    return lifecycle.run(main_, name="reconciler")


if __name__ == "__main__":
    sys.exit(main())
