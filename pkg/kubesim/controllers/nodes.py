"""The Node objects kubesim's simulated kubelets register.

A real kubelet registers its Node with capacity, allocatable, addresses,
nodeInfo, the well-known labels (kubernetes.io/hostname, kubernetes.io/os,
kubernetes.io/arch) and a Ready condition it keeps posting. kubesim's
nodes look the same, so clients that read nodes (schedulers of their own,
platform selection for images) see what they would on a cluster.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kubesim.controllers.objects import rfc3339

KUBELET_VERSION = "v1.31.0"
CONTAINER_RUNTIME = "containerd://1.7.24"


def node_labels(name: str, *, os: str, arch: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": os,
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": os,
        "beta.kubernetes.io/arch": arch,
    }


def node_object(name: str, index: int, *, os: str = "linux", arch: str = "amd64") -> dict[str, Any]:
    """A Node as its kubelet would create it (status is written separately)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels(name, os=os, arch=arch)},
        "spec": {
            "podCIDR": f"10.244.{index % 256}.0/24",
            "podCIDRs": [f"10.244.{index % 256}.0/24"],
            "providerID": f"kubesim://{name}",
        },
    }


def node_status(
    name: str, index: int, *, os: str = "linux", arch: str = "amd64", at: dt.datetime | None = None
) -> dict[str, Any]:
    stamp = rfc3339(at or dt.datetime.now(dt.UTC))
    resources = {
        "cpu": "4",
        "memory": "16384Mi",
        "ephemeral-storage": "100Gi",
        "hugepages-2Mi": "0",
        "pods": "110",
    }

    def condition(kind: str, status: str, *, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }

    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.kubesim").hex
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "conditions": [
            condition(
                "MemoryPressure",
                "False",
                reason="KubeletHasSufficientMemory",
                message="kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                reason="KubeletHasNoDiskPressure",
                message="kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                reason="KubeletHasSufficientPID",
                message="kubelet has sufficient PID available",
            ),
            condition(
                "Ready", "True", reason="KubeletReady", message="kubelet is posting ready status"
            ),
        ],
        # Addresses are labels only: nothing listens there and nothing connects to them.
        "addresses": [
            {"type": "InternalIP", "address": f"172.18.0.{(index % 250) + 2}"},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": machine,
            "systemUUID": str(uuid.UUID(machine)),
            "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, machine)),
            "kernelVersion": "6.1.0-kubesim",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": CONTAINER_RUNTIME,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": os,
            "architecture": arch,
        },
    }
