"""`python -m bench soak --minutes M --seed S`: the chaos soak with invariants (issue 17).

The sandbox in its HA shape (three NATS nodes, two fronts, two mirror workers, second
relay, tracker, reconciler and GC replicas, kubesim with three nodes and a real kubelet's
back-off), a seeded churn of Deployments, Jobs, a DaemonSet and a StatefulSet over a pool
of images with tag refreshes, seeded faults (kill -9 and restart of every process but
kubesim, one NATS node at a time, the edge registry; the artifact store down; GC forced
every few seconds and killed inside its read-only window), invariants checked while it
runs and after it settles. See `clusterregistry_sandbox.soaking` for what each invariant
decides and `invariants` for the rules themselves.

Prints the report as JSON; a run with a violation keeps its sandbox directory (every
process's log, `soak-report.json`) and says where (`kept`), and the seed replays it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterregistry_sandbox.soaking import SoakOptions, run_soak


async def soak(*, minutes: float = 10.0, seed: int = 1, root: Path | None = None,
               quick: bool = False) -> dict[str, Any]:
    options = SoakOptions(minutes=1.0 if quick else minutes, seed=seed, root=root)
    report = await run_soak(options)
    return report.as_dict()
