"""clusterregistry front: the edge registry's one door (hits, misses, read-only windows)."""

import sys

from clusterregistry.front.serving import SERVICE
from clusterregistry.runtime.running import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
