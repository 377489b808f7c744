"""The packaging promises of the layout: nothing shadows the standard library, and the
operator/control-plane install works without torch."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_stdlib_platform_is_not_shadowed_from_the_repository_root() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Linux"


@pytest.mark.slow
def test_non_editable_install_imports_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    probe = (
        "import importlib.util, carina.platform.api.types, carina.platform.cli.main, "
        "carina.workloads.config; "
        "assert importlib.util.find_spec('torch') is None, 'torch was installed'; "
        "print(carina.platform.api.types.API_VERSION)"
    )
    # From a foreign directory, so the import comes from site-packages, not the checkout.
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "carina.dev/v1alpha1"
    cli = subprocess.run(
        [str(env_dir / "bin" / "carina"), "version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("carina "), cli.stderr


def test_images_leave_the_development_only_test_cluster_out() -> None:
    # setup.py maps testcluster/ only where the folder is there: the images copy the three
    # component folders alone, so `carina.testcluster` is never installed in them.
    for dockerfile in sorted((ROOT / "docker").glob("Dockerfile.*")):
        assert "testcluster" not in dockerfile.read_text(), dockerfile.name
