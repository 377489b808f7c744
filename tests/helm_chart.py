"""Rendering helm/carina with the real helm binary (tools/build.sh builds it) for tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "carina"
PROFILES = sorted((CHART / "profiles").glob("*.yaml"))
MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")
ALL_MONITORING = (
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.podMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.grafanaDashboards.enabled=true",
)


def helm_binary() -> Path:
    """The helm the tools cache holds; skips (fails where CARINA_REQUIRE_CLUSTER=1) without it."""
    from carina.testcluster import ToolsMissing
    from carina.testcluster.binaries import tool_binary

    try:
        return tool_binary("helm", "helm")
    except ToolsMissing as exc:
        if os.environ.get("CARINA_REQUIRE_CLUSTER", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"helm is not built: {exc}", pytrace=False)
        pytest.skip(f"helm is not built: {exc}")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; raises AssertionError with its stderr when it fails and `check` is set."""
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(
    *args: str, release: str = "carina", namespace: str = "carina-system"
) -> list[dict[str, Any]]:
    """The objects `helm template` renders with these extra arguments."""
    out = helm("template", release, str(CHART), "-n", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


def named(objects: Iterable[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The one object of `kind` whose name ends with `suffix`."""
    [found] = [o for o in of_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """A container's plain env values (valueFrom entries left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
