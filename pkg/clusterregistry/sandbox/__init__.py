"""The local all-in-one: real backing processes on this machine, for the sandbox and the tests.

The project's principle is real parts everywhere a user has them, so the
sandbox (`clusterregistry sandbox`) and the integration tests run the same
nats-server, docker-registry and skopeo that a user would, on 127.0.0.1 with
random ports and private state directories. The launchers live here, once,
so the tests prove the exact code the sandbox runs:

- `supervising`: start, wait for, stop and kill one child process (and its group).
- `natsservers`: a JetStream nats-server, or a three-node cluster of them.
- `registries`: a CNCF distribution registry, plain HTTP or TLS with basic auth.
- `images`: OCI image layouts built from seeded random layers, and pushes with skopeo.
"""
