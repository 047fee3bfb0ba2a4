"""clusterregistry webhook: rewrites pod images to the in-cluster registry at admission."""

import argparse
import asyncio
import sys

from clusterregistry import config
from clusterregistry.runtime import lifecycle, logs
from clusterregistry.webhook.serving import serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="webhook", description=__doc__)
    parser.add_argument("--config", default=None, help="settings YAML (the ConfigMap)")
    parser.add_argument("--kubeconfig", default=None,
                        help="for webhook.selfSigned only (the caBundle write); "
                             "default: $KUBECONFIG or in-cluster")
    parser.add_argument("--identity", default=None, help="accepted for symmetry; unused")
    args = parser.parse_args()

    async def main_(stop: asyncio.Event) -> None:
        settings = config.load(args.config)
        logs.configure()
        await serve(settings, stop, kubeconfig=args.kubeconfig)

    return lifecycle.run(main_, name="webhook")


if __name__ == "__main__":
    sys.exit(main())
