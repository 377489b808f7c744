"""One precedence for finding the cluster, as kubectl's: explicit file, KUBECONFIG, in-cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import config

from carina.platform.controlplane.cluster import api_client


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_an_explicit_file_wins_over_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "env", "https://env:6443")))
    explicit = kubeconfig(tmp_path / "explicit", "https://explicit:6443")
    assert api_client(explicit).configuration.host == "https://explicit:6443"
    assert api_client().configuration.host == "https://env:6443"


def test_in_cluster_only_without_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(config.ConfigException):
        api_client(pool_size=4)
