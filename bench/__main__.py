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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], default=[])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    for name in names:
        report["results"][name] = asyncio.run(BENCHES[name](quick=args.quick))
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{int(time.time())}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
