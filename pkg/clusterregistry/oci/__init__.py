"""Registries over the OCI distribution API: auth, manifests, blob copies."""
