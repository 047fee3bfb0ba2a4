"""`python -m kubesim serve --port PORT --kubeconfig PATH`: kubesim as a process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from kubesim.controllers import KubeletSettings
from kubesim.running import Cluster, ClusterSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubesim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the simulated Kubernetes API")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    serve.add_argument("--kubeconfig", type=Path, required=True,
                       help="where to write the kubeconfig for this server")
    serve.add_argument("--state-dir", type=Path, default=None,
                       help="certificates and files (default: a temporary directory)")
    serve.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    serve.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    serve.add_argument("--no-controllers", action="store_true",
                       help="serve the API only: no controllers, scheduler or kubelet")
    serve.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                       help="registries the kubelet reaches over plain HTTP")
    serve.add_argument("--registry-ca", action="append", default=[], type=Path, metavar="PEM",
                       help="extra CA certificates the kubelet trusts for registries")
    serve.add_argument("--pull-backoff", type=float, default=10.0,
                       help="initial image pull back-off in seconds (kubelet default 10)")
    serve.add_argument("--pull-backoff-max", type=float, default=300.0,
                       help="image pull back-off ceiling in seconds (kubelet default 300)")
    serve.add_argument("--serialize-image-pulls", default=True,
                       action=argparse.BooleanOptionalAction,
                       help="pull one image at a time per node (kubelet default: true)")
    serve.add_argument("--max-parallel-image-pulls", type=int, default=0, metavar="N",
                       help="with --no-serialize-image-pulls, at most N pulls per node "
                            "(0: no bound; kubelet's maxParallelImagePulls)")
    serve.add_argument("--node-status-update-frequency", type=float, default=10.0,
                       metavar="SECONDS",
                       help="how soon node status reports a change of images (kubelet 10)")
    serve.add_argument("--service-endpoint", action="append", default=[],
                       metavar="NS/NAME:PORT=URL",
                       help="where a Service that webhooks name is reachable")
    serve.add_argument("--history", type=int, default=100_000,
                       help="watch history kept per resource; older resume points get 410")
    serve.add_argument("--event-ttl", type=float, default=3600.0, metavar="SECONDS",
                       help="how long Events are kept (kube-apiserver --event-ttl, 1h; 0: "
                            "forever)")
    serve.add_argument("--log-level", default="INFO")
    return parser


def _endpoints(values: list[str]) -> dict[tuple[str, str, int], str]:
    endpoints: dict[tuple[str, str, int], str] = {}
    for value in values:
        service, _, url = value.partition("=")
        ns_name, _, port = service.partition(":")
        namespace, _, name = ns_name.partition("/")
        if not (namespace and name and port.isdigit() and url):
            raise SystemExit(f"--service-endpoint {value!r}: expected NS/NAME:PORT=URL")
        endpoints[(namespace, name, int(port))] = url
    return endpoints


async def _serve(args: argparse.Namespace) -> None:
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="kubesim-"))
    settings = ClusterSettings(
        port=args.port,
        tls=not args.http,
        controllers=not args.no_controllers,
        nodes=tuple(f"node-{i}" for i in range(1, args.nodes + 1)),
        kubelet=KubeletSettings(
            insecure_registries=tuple(args.insecure_registry),
            ca_files=tuple(str(p) for p in args.registry_ca),
            backoff_initial=args.pull_backoff,
            backoff_max=max(args.pull_backoff, args.pull_backoff_max),
            serialize_image_pulls=args.serialize_image_pulls,
            max_parallel_image_pulls=args.max_parallel_image_pulls,
            node_status_update_frequency=args.node_status_update_frequency,
        ),
        service_endpoints=_endpoints(args.service_endpoint),
        history=args.history,
        event_ttl=args.event_ttl,
    )
    cluster = Cluster(state, settings)
    await cluster.start()
    # the kubeconfig is written last: its presence tells a supervisor the server is up
    args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    args.kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
    args.kubeconfig.chmod(0o600)
    print(f"kubesim serving on {cluster.url}; kubeconfig {args.kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
