"""The registry front: the one door to the edge registry (hits, misses, read-only windows)."""
