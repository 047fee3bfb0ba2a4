"""clusterregistry tracker: which images each pod owner uses, from the relay's stream to KV."""

import sys

from clusterregistry.runtime.running import run
from clusterregistry.tracker.serving import SERVICE

if __name__ == "__main__":
    sys.exit(run(SERVICE))
