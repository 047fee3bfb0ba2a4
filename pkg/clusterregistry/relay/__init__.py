"""The watch relay: Kubernetes lifecycle events onto NATS JetStream.

The system's only watcher of workload state. It lists and watches pods,
replicasets, jobs, daemonsets, statefulsets and Artifacts, and publishes one
small typed message per change (schemas.KubeEvent), de-duplicated by
Nats-Msg-Id, with relists announced by markers and per-kind checkpoints in
KV so a restart resumes where it stopped. One relay leads (a Lease); the
others stand by. See docs/architecture.md for why.
"""
