"""`python -m bench [NAME ...] [--quick]`: run benchmarks, print JSON, keep a copy in results/."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from bench import (
    front,
    gc,
    kubelet,
    kubesim_scale,
    mirror,
    relay,
    sandbox_load,
    soak,
    tracker,
    webhook,
)

BENCHES = {
    "front": front.front,
    "gc": gc.gc,
    "kubesim_store": kubesim_scale.store,
    "kubesim_watch": kubesim_scale.watch,
    "kubelet": kubelet.kubelet,
    "mirror": mirror.mirror,
    "relay": relay.relay,
    "webhook": webhook.webhook,
    "sandbox_load": sandbox_load.sandbox_load,
    "tracker": tracker.tracker,
}
# asked for by name only: `soak --minutes M --seed S` runs as long as it is told
ON_REQUEST = {"soak": soak.soak}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHES, *ON_REQUEST, []], default=[])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak: minutes of churn")
    parser.add_argument("--seed", type=int, default=1, help="soak: the seed to run (or replay)")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    for name in names:
        if name in ON_REQUEST:
            report["results"][name] = asyncio.run(ON_REQUEST[name](
                minutes=args.minutes, seed=args.seed, quick=args.quick))
        else:
            report["results"][name] = asyncio.run(BENCHES[name](quick=args.quick))
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{int(time.time())}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
