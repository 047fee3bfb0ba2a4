"""clusterregistry gc: garbage collection of the edge registry, on a schedule and on request."""

import argparse
import asyncio
import sys

from clusterregistry import config
from clusterregistry.gc.serving import serve
from clusterregistry.runtime import lifecycle, logs


def main() -> int:
    parser = argparse.ArgumentParser(prog="gc", description=__doc__)
    parser.add_argument("--config", default=None, help="settings YAML (the ConfigMap)")
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or in-cluster")
    parser.add_argument("--identity", default=None, help="fence holder identity (POD_NAME)")
    args = parser.parse_args()

    async def main_(stop: asyncio.Event) -> None:
        settings = config.load(args.config)
        logs.configure()
        await serve(settings, stop, kubeconfig=args.kubeconfig, identity=args.identity)

    return lifecycle.run(main_, name="gc")


if __name__ == "__main__":
    sys.exit(main())
