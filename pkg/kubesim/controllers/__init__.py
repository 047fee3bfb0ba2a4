"""kubesim's controller manager: the controllers, the scheduler and the kubelets.

An API server alone stores Deployments; it takes kube-controller-manager,
kube-scheduler and a kubelet per node to turn them into running pods. The
ControllerManager runs kubesim's versions of all of them on the API
server's event loop, so that clients (the product's reconcilers, kubectl
rollout status, tests) see the same chain of objects and status changes as
on a real cluster: Deployment -> ReplicaSet -> Pods -> scheduled -> images
resolved from real registries -> Running.

Every controller reads a shared cache fed by `ApiServer.subscribe` (after an
initial `ApiServer.list`), keeps a de-duplicating work queue of keys and
reconciles level-based; writes go through the ApiServer's public methods
like any client's. Events go through client-go-like recorders
(kubesim.controllers.recording) that the manager owns: started before the
controllers, flushed and stopped after them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kubesim.controllers.caching import NODES, WATCHED, Cache, Context
from kubesim.controllers.cronjobbing import CronJobController
from kubesim.controllers.daemoning import DaemonSetController
from kubesim.controllers.deploying import DeploymentController
from kubesim.controllers.jobbing import JobController
from kubesim.controllers.kubeleting import Kubelet, KubeletSettings
from kubesim.controllers.nodes import node_object, node_status
from kubesim.controllers.objects import Obj
from kubesim.controllers.podgcing import PodGarbageCollector
from kubesim.controllers.pulling import Platform
from kubesim.controllers.queueing import Controller
from kubesim.controllers.recording import Recorder, Recorders
from kubesim.controllers.replicating import ReplicaSetController
from kubesim.controllers.scheduling import Scheduler
from kubesim.controllers.statefulsetting import StatefulSetController
from kubesim.statuses import ApiError

if TYPE_CHECKING:
    from kubesim.apiserver import ApiServer
    from kubesim.resources import Resource

__all__ = ["ControllerManager", "KubeletSettings", "Recorders"]

log = logging.getLogger(__name__)


class ControllerManager:
    """Runs every kubesim controller against one ApiServer."""

    def __init__(
        self,
        api: ApiServer,
        *,
        nodes: Sequence[str] = ("node-1", "node-2", "node-3"),
        kubelet: KubeletSettings | None = None,
        job_pod_failure_backoff: float = 10.0,
        recorders: Recorders | None = None,
    ) -> None:
        self.api = api
        self.node_names = tuple(nodes)
        self.kubelet_settings = kubelet or KubeletSettings()
        self.job_pod_failure_backoff = job_pod_failure_backoff
        self.recorders = recorders or Recorders(api)
        self.cache = Cache()
        self.controllers: list[Controller] = []
        self.kubelet: Kubelet | None = None
        self._running = False

    async def start(self) -> None:
        if self._running:
            return
        self.cache = Cache()
        resources = {
            kind: self.api.resource(api_version, kind_name)
            for kind, (api_version, kind_name) in WATCHED.items()
        }
        ctx = Context(
            api=self.api, cache=self.cache, resources=resources, recorders=self.recorders
        )
        self.kubelet = Kubelet(
            ctx, self.kubelet_settings,
            # each node's kubelet has its own broadcaster: source {kubelet, <node>}
            recorder_for=lambda node: self.recorders.recorder_for("kubelet", host=node),
        )
        scheduler = Scheduler(ctx)
        self.controllers = [
            scheduler,
            ReplicaSetController(ctx),
            DeploymentController(ctx),
            DaemonSetController(ctx),
            StatefulSetController(ctx),
            JobController(ctx, pod_failure_backoff=self.job_pod_failure_backoff),
            CronJobController(ctx),
            PodGarbageCollector(ctx),
            self.kubelet,
        ]
        self._running = True
        # subscribe and list in one synchronous step: no change can fall in between.
        self.api.subscribe(self._on_change)
        for kind, resource in resources.items():
            for item in self.api.list(resource).get("items") or []:
                self.cache.apply(kind, "ADDED", obj=item)
        await self._register_nodes(resources[NODES])
        self.recorders.start()
        for controller in self.controllers:
            controller.start()

    async def stop(self) -> None:
        """Stop every controller and the subscription."""
        if not self._running:
            return
        self._running = False
        self.api.unsubscribe(self._on_change)
        await asyncio.gather(*(c.stop() for c in self.controllers), return_exceptions=True)
        self.controllers = []
        # after the controllers: what they recorded last is still written
        await self.recorders.stop()

    def recorder_for(self, component: str, *, host: str = "") -> Recorder:
        """A core/v1 event recorder (client-go's tools/record) for `component` on `host`,
        e.g. `recorder_for("kubelet", host="node-1")`; see kubesim.controllers.recording."""
        return self.recorders.recorder_for(component, host=host)

    def _on_change(self, event: str, resource: Resource, obj: Obj) -> None:
        if not self._running:
            return
        kind = resource.group_resource
        if kind not in WATCHED:
            return
        old = self.cache.apply(kind, event, obj=obj)
        if event == "DELETED":
            old, new = (old if old is not None else obj), None
        else:
            new = obj
        for controller in self.controllers:
            try:
                controller.on_event(event, kind, old=old, new=new)
            except Exception:
                log.exception("%s: handling %s of a %s failed", controller.name, event, kind)

    async def _register_nodes(self, resource: Resource) -> None:
        """Each kubelet registers its Node if it does not exist yet."""
        platform = Platform.parse(self.kubelet_settings.default_platform)
        for index, name in enumerate(self.node_names):
            try:
                self.api.get(resource, namespace=None, name=name)
                continue
            except ApiError as err:
                if err.code != 404:
                    raise
            try:
                created = await self.api.create(
                    resource, node_object(name, index, os=platform.os, arch=platform.architecture)
                )
            except ApiError as err:
                if err.reason != "AlreadyExists":
                    raise
                continue
            if not (created.get("status") or {}).get("conditions"):
                created["status"] = node_status(
                    name, index, os=platform.os, arch=platform.architecture
                )
                await self.api.update(resource, created, subresource="status")
