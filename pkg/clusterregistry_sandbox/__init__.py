"""The local all-in-one: real backing processes on this machine, for the sandbox and the tests.

The project's principle is real parts everywhere a user has them, so the
sandbox (`clusterregistry sandbox`) and the integration tests run the same
nats-server, docker-registry and skopeo that a user would, on 127.0.0.1 with
random ports and private state directories. The launchers live here, once,
so the tests prove the exact code the sandbox runs.

This is a distribution of its own (`clusterregistry-sandbox`, its
pyproject.toml beside this file): the product's image never ships it, it
imports the product and kubesim and neither imports it (an import-linter
contract), and it adds `demo` and `sandbox` to the `clusterregistry` command
line through the entry-point group `clusterregistry.commands`.

Launchers, one real process each:

- `supervising`: start, wait for, stop and kill one child process (and its group).
- `natsservers`: a JetStream nats-server, or a three-node cluster of them.
- `registries`: a CNCF distribution registry, plain HTTP or TLS with basic auth.
- `apiclients`: a small JSON client for the sandbox's API server (kubesim), from its kubeconfig.

Images:

- `images`: OCI image layouts built from seeded random layers, and pushes with skopeo.
- `uploading`: a built image pushed straight through the registry API, for scale.
- `samples`: the sample images the artifact store is filled with.

The whole system and its commands:

- `systems`: every process of a cluster on one machine, under one directory, from a checkout's
  `cmd/` (`repo_dir`).
- `hosting`: `sandbox up|status|down`, a sandbox that outlives the command that started it.
- `commands`: the `sandbox` and `demo` subcommands as the `clusterregistry` CLI loads them.

The demo and what it checks:

- `scenarios`: the demo's scenario, a network function deployed, cut off and freed.
- `loading`: many Deployments over many images created at once, measured.
- `podstarts`: time to Running, and the image pull failures the kubelets reported.
- `verifying`: the exact end state after a scenario or a fault, checked against every layer.
- `narrating`: text for people, the demo's timeline lines and aligned tables.
- `soaking`: the chaos soak: seeded churn and faults (kill -9 of anything but kubesim) on
  the HA sandbox, invariants checked while it runs and after it settles.
- `invariants`: the soak's rules as pure decisions (whole images, no loss under a live
  owner, registry bytes, one message per Nats-Msg-Id, artifact store fetches).
"""
