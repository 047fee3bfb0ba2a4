"""clusterregistry webhook: rewrites pod images to the in-cluster registry at admission."""

import sys

from clusterregistry.runtime.running import run
from clusterregistry.webhook.serving import SERVICE

if __name__ == "__main__":
    sys.exit(run(SERVICE))
