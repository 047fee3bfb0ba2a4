"""clusterregistry gc: garbage collection of the edge registry, on a schedule and on request."""

import sys

from clusterregistry.gc.serving import SERVICE
from clusterregistry.runtime.running import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
