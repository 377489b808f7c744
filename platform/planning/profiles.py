"""Cluster profiles as data: what a worker pod needs on each kind of GPU cluster.

`render.build_worker_pod` merges the profile into the pod; nothing else in the code branches
on the profile's name. Label and resource names follow the NVIDIA GPU operator (GPU feature
discovery, device plugin), the NVIDIA network operator (RDMA shared device plugin) and
Multus; the test cluster's fake pools (carina.testcluster.pools) use the same names,
and a unit test keeps the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from carina.platform.api.queues import GPU, RDMA
from carina.platform.api.types import ClusterProfile, TopologyMode, TopologySpec, TrainingJob

# The device plugins' resource names, one source with the quota API's.
GPU_RESOURCE = GPU
RDMA_RESOURCE = RDMA

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
POOL_LABEL = "carina.dev/pool"
SCALABLE_UNIT_LABEL = "carina.dev/scalable-unit"
MULTUS_NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"

# GPU nodes carry this taint (NVIDIA GPU operator convention) so only GPU workers land there.
GPU_TOLERATION: dict[str, Any] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Profile:
    """Everything a cluster kind adds to a worker pod."""

    name: str
    node_selector: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tolerations: tuple[dict[str, Any], ...] = ()
    annotations: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Extra resources per worker, requested and limited alike (extended resources).
    extra_resources: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # Linux capabilities RDMA needs (pinning memory for the HCA).
    capabilities: tuple[str, ...] = ()
    # The topology a job of this profile gets when it names none (`spec.topology`).
    topology: TopologySpec | None = None


def _frozen(**items: str) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(items))


# IBM Vela: cloud VMs with 8 A100s, RoCE over SR-IOV virtual functions attached by Multus.
VELA = Profile(
    name=ClusterProfile.VELA,
    node_selector=_frozen(**{POOL_LABEL: "vela"}),
    tolerations=(GPU_TOLERATION,),
    annotations=_frozen(**{MULTUS_NETWORKS_ANNOTATION: "roce-sriov"}),
    env=_frozen(
        NCCL_IB_HCA="mlx5",  # the SR-IOV VFs of the ConnectX NICs
        NCCL_IB_GID_INDEX="3",  # RoCE v2 GID on IPv4
        NCCL_SOCKET_IFNAME="eth0",  # bootstrap over the pod network; data over net1 (RoCE)
        NCCL_IB_DISABLE="0",
        NCCL_CROSS_NIC="0",
    ),
    capabilities=("IPC_LOCK",),
)

# IBM Blue Vela: on-prem H100 SuperPOD, InfiniBand, built of scalable units (SUs).
BLUE_VELA = Profile(
    name=ClusterProfile.BLUE_VELA,
    node_selector=_frozen(**{POOL_LABEL: "blue-vela"}),
    tolerations=(GPU_TOLERATION,),
    env=_frozen(
        NCCL_IB_HCA="mlx5",
        NCCL_SOCKET_IFNAME="eth0",
        NCCL_IB_DISABLE="0",
        NCCL_NET_GDR_LEVEL="PHB",  # GPUDirect RDMA when GPU and HCA share a PCIe switch
    ),
    extra_resources=_frozen(**{RDMA_RESOURCE: "1"}),
    capabilities=("IPC_LOCK",),
    # One SU is one leaf/spine group: a gang inside it never crosses the spine.
    topology=TopologySpec(level=SCALABLE_UNIT_LABEL, mode=TopologyMode.PREFERRED),
)

# Plain nodes: nothing added beyond the GPU toleration a GPU request implies.
NONE = Profile(name=ClusterProfile.NONE)

PROFILES: MappingProxyType[str, Profile] = MappingProxyType(
    {p.name: p for p in (VELA, BLUE_VELA, NONE)}
)


def profile_for(name: str | ClusterProfile) -> Profile:
    """The profile of this name (a ClusterProfile value)."""
    return PROFILES[str(ClusterProfile(name).value)]


def topology_request(job: TrainingJob) -> TopologySpec | None:
    """The topology the gang asks for: `spec.topology`, else its profile's default."""
    return job.spec.topology or profile_for(job.spec.cluster).topology
