"""A whole simulated cluster in one object: API server, HTTP(S), controllers, kubeconfig.

Tests and the sandbox embed kubesim through `Cluster`; `python -m kubesim
serve` runs the same thing as a process.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kubesim.apiserver import DEFAULT_EVENT_TTL, ApiServer
from kubesim.certificates import CertificateAuthority
from kubesim.controllers import ControllerManager, KubeletSettings
from kubesim.kubeconfigs import write_kubeconfig
from kubesim.serving import Server
from kubesim.storage import Store


@dataclass
class ClusterSettings:
    port: int = 0
    tls: bool = True
    controllers: bool = True
    nodes: Sequence[str] = ("node-1", "node-2", "node-3")
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    history: int = 100_000
    bookmark_interval: float = 10.0
    # kube-apiserver's --event-ttl: Events expire this many seconds after their last write
    event_ttl: float = DEFAULT_EVENT_TTL
    # Services the API server must reach (webhooks): (namespace, name, port) -> base URL
    service_endpoints: dict[tuple[str, str, int], str] = field(default_factory=dict)


class Cluster:
    """kubesim, started and stopped as one."""

    def __init__(self, state_dir: Path | str, settings: ClusterSettings | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.settings = settings or ClusterSettings()
        self.api = ApiServer(store=Store(history=self.settings.history),
                             service_resolver=self._resolve_service,
                             event_ttl=self.settings.event_ttl)
        self.ca: CertificateAuthority | None = None
        self.server: Server | None = None
        self.controllers: ControllerManager | None = None
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.ca_path = self.state_dir / "ca.crt"

    def _resolve_service(self, namespace: str, name: str, port: int) -> str | None:
        return self.settings.service_endpoints.get((namespace, name, port))

    @property
    def url(self) -> str:
        assert self.server is not None, "cluster not started"
        return self.server.url

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        context: ssl.SSLContext | None = None
        if self.settings.tls:
            self.ca = CertificateAuthority.create("kubesim-ca")
            self.ca.write(self.ca_path)
            pair = self.ca.issue(common_name="kube-apiserver",
                                 hosts=["127.0.0.1", "localhost", "kubernetes.default.svc"])
            cert, key = pair.write(self.state_dir, "apiserver")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        await self.api.start()
        self.server = Server(self.api, port=self.settings.port, ssl_context=context,
                             bookmark_interval=self.settings.bookmark_interval)
        await self.server.start()
        write_kubeconfig(self.kubeconfig, server=self.server.url,
                         ca_pem=self.ca.cert_pem if self.ca else None)
        if self.settings.controllers:
            kubelet = self.settings.kubelet
            if kubelet.state_dir is None:
                # the nodes' content stores live beside the cluster's other files
                kubelet = replace(kubelet, state_dir=str(self.state_dir))
            self.controllers = ControllerManager(self.api, nodes=self.settings.nodes,
                                                 kubelet=kubelet)
            await self.controllers.start()

    async def stop(self) -> None:
        if self.controllers is not None:
            await self.controllers.stop()
            self.controllers = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        await self.api.stop()
