"""values.yaml documents every key (`# --`), and README.md is generated from it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from helm_chart import CHART, PROFILES, ROOT

SCRIPT = ROOT / "scripts" / "helm-readme.py"


@pytest.fixture(scope="module")
def readme() -> ModuleType:
    """scripts/helm-readme.py as a module (its name has a dash)."""
    spec = importlib.util.spec_from_file_location("helm_readme", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_values_key_has_a_description(readme: ModuleType) -> None:
    _, missing = readme.rows((CHART / "values.yaml").read_text())
    assert missing == []


def test_the_readme_is_generated_from_the_current_values() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_documented_mapping_is_one_row_and_an_undocumented_leaf_is_reported(
    readme: ModuleType,
) -> None:
    text = (
        "# -- the security context\n"
        "securityContext:\n"
        "  runAsNonRoot: true\n"
        "operator:\n"
        "  # -- replicas of the operator\n"
        "  # that run at once\n"
        "  replicas: 2\n"
        "  port: 8080\n"
        "  # -- tolerations\n"
        "  tolerations:\n"
        "    - key: a\n"
        "      operator: Exists\n"
    )
    rows, missing = readme.rows(text)
    assert [(r.key, r.type, r.description) for r in rows] == [
        ("securityContext", "object", "the security context"),
        ("operator.replicas", "int", "replicas of the operator that run at once"),
        ("operator.tolerations", "list", "tolerations"),
    ]
    assert missing == ["operator.port"]


def _paths(node: object, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not isinstance(node, dict) or not node:
        return {prefix}
    return {p for key, value in node.items() for p in _paths(value, (*prefix, key))}


def _known(values: dict[str, object], path: tuple[str, ...]) -> bool:
    node: object = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        # Below a free-form mapping (affinity, resources, ...) any key is the user's to set.
        if isinstance(node, dict) and not node:
            return True
        if part in {"affinity", "resources", "nodeSelector", "podAnnotations"}:
            return True
    return True


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_sets_only_keys_the_chart_has(profile: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unknown = [
        ".".join(p) for p in _paths(yaml.safe_load(profile.read_text())) if not _known(values, p)
    ]
    assert unknown == []
