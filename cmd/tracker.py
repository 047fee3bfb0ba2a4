"""clusterregistry tracker: which images each pod owner uses, from the relay's stream to KV."""

import argparse
import asyncio
import sys

from clusterregistry import config
from clusterregistry.runtime import lifecycle, logs
from clusterregistry.tracker.serving import serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="tracker", description=__doc__)
    parser.add_argument("--config", default=None, help="settings YAML (the ConfigMap)")
    parser.add_argument("--kubeconfig", default=None, help="unused: the tracker reads NATS only")
    parser.add_argument("--identity", default=None,
                        help="names this replica in logs (every replica shares one consumer)")
    args = parser.parse_args()

    async def main_(stop: asyncio.Event) -> None:
        settings = config.load(args.config)
        logs.configure()
        await serve(settings, stop, identity=args.identity)

    return lifecycle.run(main_, name="tracker")


if __name__ == "__main__":
    sys.exit(main())
