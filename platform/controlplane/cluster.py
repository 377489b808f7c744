"""Connecting to a Kubernetes cluster: one precedence for the operator and the control plane.

kubectl's order: an explicit kubeconfig file, else `$KUBECONFIG` or `~/.kube/config`, else the
pod's service account (in-cluster). `kubernetes.config.ConfigException` when none works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def configuration(kubeconfig: Path | None = None, pool_size: int | None = None) -> Any:
    """A `kubernetes.client.Configuration` for the cluster the precedence above finds."""
    from kubernetes import client, config

    found = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=found)
    else:
        # Read $KUBECONFIG now: the kubernetes package reads it once, when it is imported.
        default = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        try:
            config.load_kube_config(config_file=default, client_configuration=found)
        except config.ConfigException:
            config.load_incluster_config(client_configuration=found)
    if pool_size is not None:
        found.connection_pool_maxsize = pool_size
    return found


def api_client(kubeconfig: Path | None = None, pool_size: int | None = None) -> Any:
    """A `kubernetes.client.ApiClient` for the cluster the precedence above finds."""
    from kubernetes import client

    return client.ApiClient(configuration(kubeconfig, pool_size))
