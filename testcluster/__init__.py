"""A real Kubernetes control plane, Prometheus and S3 on loopback, for tests and for people.

`python -m carina.testcluster` (or `make cluster`) runs it in the foreground;
tests use `TestCluster`, `PrometheusServer` and `S3Server` through tests/integration/conftest.py.
The binaries come from tools/build.sh (`make tools`); this package needs only the standard
library and the openssl CLI.
"""

from carina.testcluster.binaries import ToolsMissing, find_binaries, tools_dir
from carina.testcluster.cluster import FakeNodeTuning, KubectlError, TestCluster
from carina.testcluster.pools import (
    BLUE_VELA,
    CPU,
    DEFAULT_POOLS,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    POOL_LABEL,
    RACK_LABEL,
    RDMA_RESOURCE,
    SCALABLE_UNIT_LABEL,
    SIMULATE_EXIT_CODE_ANNOTATION,
    SIMULATE_EXIT_DELAY_ANNOTATION,
    SIMULATE_EXIT_MESSAGE_ANNOTATION,
    SIMULATE_NOT_READY_LABEL,
    SIMULATE_SIGTERM_MESSAGE_ANNOTATION,
    VELA,
    ZONE_LABEL,
    NodePool,
)
from carina.testcluster.processes import ProcessDied
from carina.testcluster.prometheus import PrometheusServer
from carina.testcluster.s3 import S3Bucket, S3Server

__all__ = [
    "BLUE_VELA",
    "CPU",
    "DEFAULT_POOLS",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "POOL_LABEL",
    "RACK_LABEL",
    "RDMA_RESOURCE",
    "SCALABLE_UNIT_LABEL",
    "SIMULATE_EXIT_CODE_ANNOTATION",
    "SIMULATE_EXIT_DELAY_ANNOTATION",
    "SIMULATE_EXIT_MESSAGE_ANNOTATION",
    "SIMULATE_NOT_READY_LABEL",
    "SIMULATE_SIGTERM_MESSAGE_ANNOTATION",
    "VELA",
    "ZONE_LABEL",
    "FakeNodeTuning",
    "KubectlError",
    "NodePool",
    "ProcessDied",
    "PrometheusServer",
    "S3Bucket",
    "S3Server",
    "TestCluster",
    "ToolsMissing",
    "find_binaries",
    "tools_dir",
]
