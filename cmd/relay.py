"""clusterregistry relay: Kubernetes watch events onto NATS JetStream."""

import sys

from clusterregistry.relay.serving import SERVICE
from clusterregistry.runtime.running import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
