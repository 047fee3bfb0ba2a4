"""The mirror workers: copy requested images into the local registry."""
