"""Fake GPU node pools, described as data and rendered to kwok-managed Node manifests."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# The annotation kwok is started to manage (--manage-nodes-with-annotation-selector).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"

GPU_RESOURCE = "nvidia.com/gpu"
# Blue Vela's InfiniBand HCAs as the NVIDIA network operator's RDMA shared device plugin
# exposes them; a worker that wants GPUDirect RDMA requests one unit.
RDMA_RESOURCE = "rdma/rdma_shared_device_ib"

POOL_LABEL = "carina.dev/pool"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
ZONE_LABEL = "topology.kubernetes.io/zone"
RACK_LABEL = "carina.dev/rack"
SCALABLE_UNIT_LABEL = "carina.dev/scalable-unit"

# The taint the NVIDIA GPU operator's deployments put on GPU nodes, so only pods that
# tolerate it (GPU workers) land there.
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"

# What the kwok stages react to (see tools/kwok/stages/): a node label and pod annotations.
SIMULATE_NOT_READY_LABEL = "carina.dev/simulate-not-ready"
SIMULATE_EXIT_CODE_ANNOTATION = "carina.dev/simulate-exit-code"
SIMULATE_EXIT_DELAY_ANNOTATION = "carina.dev/simulate-exit-delay"
SIMULATE_EXIT_MESSAGE_ANNOTATION = "carina.dev/simulate-exit-message"
# On deletion (SIGTERM) the pod exits 75 with this termination message: a checkpoint ack.
SIMULATE_SIGTERM_MESSAGE_ANNOTATION = "carina.dev/simulate-sigterm-message"


@dataclass(frozen=True)
class NodePool:
    """A group of identical fake nodes; `size` nodes named <name>-0 ... <name>-<size-1>."""

    name: str
    size: int
    cpu: str = "96"
    memory: str = "1Ti"
    gpus: int = 0
    gpu_product: str | None = None
    extended: dict[str, str] = field(default_factory=dict)  # other resources, e.g. RDMA
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    zones: tuple[str, ...] = ("zone-a",)
    nodes_per_rack: int = 4
    # Nodes per scalable unit; 0 leaves the label off (only Blue Vela is built of SUs).
    nodes_per_su: int = 0

    def with_size(self, size: int) -> NodePool:
        """The same pool with another node count."""
        return replace(self, size=size)


# IBM Vela: cloud VMs with 8 A100-80GB each, RoCE networking, spread over zones.
VELA = NodePool(
    name="vela",
    size=2,
    gpus=8,
    gpu_product=A100,
    taints=(GPU_TAINT,),
    zones=("us-east-1", "us-east-2"),
    nodes_per_rack=2,
)

# IBM Blue Vela: on-prem H100 SuperPOD with InfiniBand, built of scalable units.
BLUE_VELA = NodePool(
    name="blue-vela",
    size=2,
    gpus=8,
    gpu_product=H100,
    extended={RDMA_RESOURCE: "64"},
    taints=(GPU_TAINT,),
    zones=("poughkeepsie-1",),
    nodes_per_rack=4,
    # A Blue Vela SU is 32 nodes on one leaf/spine group.
    nodes_per_su=32,
)

# An untainted CPU node, so pods that ask for no GPU (and tolerate nothing) can still run.
CPU = NodePool(name="cpu", size=1, cpu="32", memory="128Gi")

DEFAULT_POOLS: tuple[NodePool, ...] = (CPU, VELA, BLUE_VELA)


def node_manifest(pool: NodePool, index: int) -> dict[str, Any]:
    """The Node object for node `index` of `pool`, status included (kwok keeps it on create)."""
    resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", **pool.extended}
    labels = {
        "kubernetes.io/hostname": f"{pool.name}-{index}",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
        ZONE_LABEL: pool.zones[index % len(pool.zones)],
        RACK_LABEL: f"{pool.name}-rack-{index // pool.nodes_per_rack}",
        **pool.labels,
    }
    if pool.gpus:
        resources[GPU_RESOURCE] = str(pool.gpus)
        labels[GPU_COUNT_LABEL] = str(pool.gpus)
        labels["nvidia.com/gpu.present"] = "true"
    if pool.gpu_product:
        labels[GPU_PRODUCT_LABEL] = pool.gpu_product
    if pool.nodes_per_su:
        labels[SCALABLE_UNIT_LABEL] = f"su-{index // pool.nodes_per_su}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"{pool.name}-{index}",
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE},
        },
        "spec": {"taints": [dict(t) for t in pool.taints]},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def pool_manifests(pools: tuple[NodePool, ...] | list[NodePool]) -> list[dict[str, Any]]:
    """Every Node of every pool, in order."""
    return [node_manifest(pool, i) for pool in pools for i in range(pool.size)]
