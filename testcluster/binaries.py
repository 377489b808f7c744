"""Where the Go-built binaries live: the cache folder tools/build.sh fills, keyed by version."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# testcluster/binaries.py -> the repository root holds tools/ (build.sh, go.mod files).
REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_SRC = Path(os.environ.get("CARINA_TOOLS_SRC", REPO_ROOT / "tools"))

# tool name -> (folder under tools/, Go module whose version keys the cache, binaries it gives).
# Keep in step with tool_spec() in tools/build.sh.
TOOLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3", ("etcd",)),
    "kubernetes": (
        "k8s",
        "k8s.io/kubernetes",
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ),
    "kwok": ("kwok", "sigs.k8s.io/kwok", ("kwok",)),
    "helm": ("helm", "helm.sh/helm/v3", ("helm",)),
    "minio": ("minio", "github.com/minio/minio", ("minio",)),
}


class ToolsMissing(RuntimeError):
    """A binary is not built yet; the message says how to build it."""


def tools_dir() -> Path:
    """The cache folder: $CARINA_TOOLS_DIR, else ~/.cache/carina/tools (as tools/build.sh)."""
    if env := os.environ.get("CARINA_TOOLS_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "carina" / "tools"


def module_version(go_mod: Path, module: str) -> str:
    """The version `go_mod` requires for `module` (the go.mod is where versions are pinned)."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    match = pattern.search(go_mod.read_text())
    if match is None:
        raise ToolsMissing(f"{go_mod} does not require {module}")
    return match.group(1)


def tool_version(tool: str) -> str:
    """The pinned version of a tool, e.g. 'v1.36.3' for 'kubernetes'."""
    folder, module, _ = TOOLS[tool]
    return module_version(TOOLS_SRC / folder / "go.mod", module)


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the test cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    helm: Path | None
    minio: Path | None


def tool_binary(tool: str, binary: str) -> Path:
    """Path of one built binary; raises ToolsMissing with the fix when it is absent."""
    if override := os.environ.get("CARINA_TOOLS_BIN"):
        # One flat folder of binaries, for machines that build them some other way.
        path = Path(override) / binary
    else:
        path = tools_dir() / f"{tool}-{tool_version(tool).removeprefix('v')}" / binary
    if not os.access(path, os.X_OK):
        raise ToolsMissing(f"{binary} not found at {path}: run `make tools` (tools/build.sh)")
    return path


def find_binaries(*, need_helm: bool = False, need_minio: bool = False) -> Binaries:
    """Locate the control plane's binaries; helm and minio are optional unless asked for."""

    def optional(tool: str, needed: bool) -> Path | None:
        try:
            return tool_binary(tool, tool)
        except ToolsMissing:
            if needed:
                raise
            return None

    return Binaries(
        etcd=tool_binary("etcd", "etcd"),
        kube_apiserver=tool_binary("kubernetes", "kube-apiserver"),
        kube_controller_manager=tool_binary("kubernetes", "kube-controller-manager"),
        kube_scheduler=tool_binary("kubernetes", "kube-scheduler"),
        kubectl=tool_binary("kubernetes", "kubectl"),
        kwok=tool_binary("kwok", "kwok"),
        helm=optional("helm", need_helm),
        minio=optional("minio", need_minio),
    )


def kwok_stages_dir() -> Path:
    """The kwok Stage YAMLs the cluster loads (tools/kwok/stages, or $CARINA_KWOK_STAGES)."""
    return Path(os.environ.get("CARINA_KWOK_STAGES", TOOLS_SRC / "kwok" / "stages"))
