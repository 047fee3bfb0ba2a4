"""The reconciler: one Artifact per source image, mirror requests, and true statuses."""
