"""clusterregistry mirror: copy requested images into the local registry."""

import sys

from clusterregistry.mirror.serving import SERVICE
from clusterregistry.runtime.running import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
