"""clusterregistry reconciler: one Artifact per source image, mirror requests, true statuses."""

import sys

from clusterregistry.reconciler.serving import SERVICE
from clusterregistry.runtime.running import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
