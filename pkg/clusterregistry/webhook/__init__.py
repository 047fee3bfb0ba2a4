"""The mutating admission webhook: pod images rewritten to the in-cluster registry.

kube-apiserver sends every pod creation (and ephemeral container update) here;
each image from a source registry becomes `<local-registry>/<source-host>/<path>`
with its tag and digest kept, and the originals go into the annotation
`clusterregistry.io/original-images`. No side effects: no API call, no wait on
NATS (IfAvailable reads a local copy of the artifact bucket). `mutation` is the
pure rewrite, `admitting` one review, `serving` the HTTPS process.
"""
