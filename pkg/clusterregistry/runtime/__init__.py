"""The process-lifecycle adapter every clusterregistry process is built on.

Each process (webhook, relay, tracker, reconciler, mirror, gc) needs the same
plumbing: logs a cluster's log pipeline can parse (`logs`), liveness,
readiness and metrics endpoints for the kubelet and Prometheus (`probes`),
and a main loop that stops gracefully on SIGTERM and turns failures into
exit codes (`lifecycle`). Keeping it in one adapter keeps the services about
their own work.
"""
