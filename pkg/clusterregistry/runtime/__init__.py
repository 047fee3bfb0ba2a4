"""The process-lifecycle adapter every clusterregistry process is built on.

Each process (webhook, relay, tracker, reconciler, mirror, gc) needs the same
plumbing: logs a cluster's log pipeline can parse (`logs`), liveness,
readiness and metrics endpoints for the kubelet and Prometheus (`probes`),
a main loop that stops gracefully on SIGTERM and turns failures into exit
codes (`lifecycle`), and the one way a process starts (`running`: its flags,
identity, settings, metrics registry, and `enableClusterRegistry: false`
meaning nothing starts). Keeping it in one adapter keeps the services about
their own work.
"""
