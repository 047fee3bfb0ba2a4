"""`clusterregistry sandbox up|status|down`: a sandbox that outlives the command that started it.

The processes of a `System` are children of the Python process that started
them, and die with it. For a sandbox a user keeps running between commands,
`up` starts a detached supervisor (the same command with `--foreground`, in
its own session, logging to `<dir>/logs/sandbox.log`) that owns the System,
writes `state.json` as it goes, and stops everything on SIGTERM. `up` waits
until the state file says ready (or failed) and prints the status; `down`
signals the supervisor and then kills, by recorded pid and start time, any
process left over (a supervisor that was itself killed); `up` in a directory
whose supervisor died does that clean-up first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from clusterregistry_sandbox.narrating import table
from clusterregistry_sandbox.systems import (
    STATE_FILE,
    ComponentState,
    System,
    SystemOptions,
    alive,
    cleanup_leftovers,
    component_health,
    read_state,
)

__all__ = ["down", "run_foreground", "status", "up"]
_UP_TIMEOUT = 240.0
# what a sandbox writes in its directory; only these are removed before a fresh start
_OWNED = ("logs", "nats", "artifact-store", "edge", "front", "kube", "images", "config",
          "webhook", STATE_FILE, "kubeconfig", "settings.yaml", "ca.crt")


def _supervisor_alive(root: Path) -> bool:
    state = read_state(root) or {}
    supervisor = state.get("supervisor") or {}
    return alive(supervisor.get("pid"), supervisor.get("started"))


def _clear(root: Path) -> None:
    for name in _OWNED:
        path = root / name
        if name == "logs" and path.is_dir():
            # the supervisor's own log was opened by `up` before it starts: keep it
            for log in path.iterdir():
                if log.name != "sandbox.log":
                    log.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


async def run_foreground(root: Path, options: SystemOptions | None = None) -> int:
    """Run a sandbox in this process until SIGTERM or SIGINT; 0 when it stopped cleanly."""
    await cleanup_leftovers(root)
    _clear(root)
    system = System(root, options)
    system.set_supervisor(os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.ensure_future(system.start())
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()
            print(f"sandbox ready in {root}", flush=True)
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
    except Exception as exc:
        print(f"sandbox failed: {exc}", file=sys.stderr, flush=True)
        await system.stop()
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await system.stop()
    print("sandbox stopped", flush=True)
    return 0


async def up(root: Path, *, nats_cluster: bool = False,
             flaky_link: str | None = None) -> tuple[int, str]:
    """Start a detached sandbox in `root` (absolute), or report the one running; (code, text)."""
    if _supervisor_alive(root):
        # running, or still starting: never start a second one over it
        code, text = await status(root)
        return code, f"a sandbox is already running in {root} (`down` stops it)\n{text}"
    leftovers = await cleanup_leftovers(root)
    _clear(root)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "clusterregistry.cli", "sandbox", "up", "--foreground",
            "--dir", str(root)]
    if nats_cluster:
        argv.append("--nats-cluster")
    if flaky_link is not None:
        argv += ["--flaky-link", flaky_link]
    with (root / "logs" / "sandbox.log").open("ab") as log:
        child = subprocess.Popen(  # noqa: ASYNC220 - detached on purpose, never awaited here
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=os.getcwd())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _UP_TIMEOUT
    phase = ""
    while loop.time() < deadline:
        state = read_state(root) or {}
        supervisor = (state.get("supervisor") or {}).get("pid")
        phase = str(state.get("phase", "")) if supervisor == child.pid else ""
        if phase in ("ready", "failed", "stopped") or child.poll() is not None:
            break
        await asyncio.sleep(0.2)
    prefix = f"stopped what a previous sandbox left: {', '.join(leftovers)}\n" if leftovers else ""
    if phase != "ready":
        log_path = root / "logs" / "sandbox.log"
        tail = (log_path.read_text(errors="replace").splitlines()[-30:]
                if log_path.exists() else [])
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        error = (read_state(root) or {}).get("error", "")
        return 1, (prefix + f"the sandbox did not start (phase {phase or 'unknown'})"
                   f"{': ' + error if error else ''}\n" + "\n".join(tail))
    code, text = await status(root)
    return code, prefix + text


def _health_word(component: ComponentState, healthy: bool) -> str:
    if component.note.startswith("absent"):
        return "absent"
    if component.pid is None:
        return "stopped"
    return "healthy" if healthy else "UNHEALTHY"


async def status(root: Path) -> tuple[int, str]:
    """A table of every process: pid, port, health; 0 when every started one is healthy."""
    state = read_state(root)
    if state is None:
        return 3, f"no sandbox in {root} (run `clusterregistry sandbox up --dir {root}`)"
    components = [ComponentState(**c) for c in state.get("components", [])]
    checked = await component_health(components, ca_file=str(state.get("ca", "")),
                                      kube_ca=str(state.get("kube_ca", "")))
    rows = [
        (c.name, c.role, c.pid or "-", c.port or "-", _health_word(c, ok), c.url or "", c.note)
        for c, ok in checked
    ]
    running = _supervisor_alive(root)
    phase = state.get("phase") if running else f"{state.get('phase')} (supervisor not running)"
    store = state.get("artifact_store") or {}
    lines = [
        f"sandbox {root}: {phase}",
        table(("PROCESS", "ROLE", "PID", "PORT", "HEALTH", "URL", "NOTE"), rows),
        "",
        f"kubectl:        .venv/bin/kubectl --kubeconfig {state.get('kubeconfig')} "
        "get pods,artifacts -A",
        f"trace:          CLUSTERREGISTRY_NATS_SERVERS={','.join(state.get('nats_servers', []))}"
        " clusterregistry trace --from-start",
        f"artifact store: {store.get('host')} (user {store.get('username')}, "
        f"password {store.get('password')}, CA {state.get('ca')})",
        *([f"flaky link:     {link['listen']} -> the store at {link['store']} "
           f"({link['faults']}); image references name {link['listen']}"]
          if (link := state.get("flaky_link")) else []),
        f"pull from:      {state.get('local_registry')} (pods' images are rewritten to it)",
        f"logs:           {root / 'logs'}",
    ]
    for sample in state.get("samples", []):
        lines.append(f"sample image:   {sample['reference']}  {sample['kind']}")
    started = [(c, ok) for c, ok in checked if c.pid is not None]
    healthy = running and bool(started) and all(ok for _, ok in started)
    return (0 if healthy else 1), "\n".join(lines)


async def down(root: Path) -> tuple[int, str]:
    """Stop the sandbox in `root` and everything it left; its files stay for reading."""
    if read_state(root) is None:
        return 0, f"no sandbox in {root}"
    stopped = await cleanup_leftovers(root)
    state_path = root / STATE_FILE
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(state_path.read_text())
        document["phase"] = "stopped"
        state_path.write_text(json.dumps(document, indent=2) + "\n")
    if not stopped:
        return 0, f"sandbox {root}: nothing was running"
    return 0, f"sandbox {root}: stopped ({', '.join(stopped)}); logs in {root / 'logs'}"
