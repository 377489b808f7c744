"""The `vision` kind in the API: a TrainingJob that names it, its worker spec, its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builders import make_job

from carina.platform.api.manifests import ManifestError, parse_manifest
from carina.platform.embedded.paths import LocalFolders, LocalRoot, refused_paths
from carina.platform.planning.render import spec_document
from carina.workloads.config import VISION_RECIPES, VisionConfig
from carina.workloads.worker import load_spec

ROOT = Path(__file__).resolve().parents[3]


def test_a_vision_job_parses_and_its_worker_reads_the_same_config(tmp_path: Path) -> None:
    job = parse_manifest(make_job("deit-lt").with_vision(data={"imbalanceRatio": 50}))
    assert job.spec.workload.kind == "vision"
    config = job.spec.workload.vision
    assert config is not None
    assert config.data.imbalance_ratio == 50
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_document(job)))
    kind, read = load_spec(str(spec))
    assert kind == "vision"
    assert read == config


def test_the_example_is_a_tiny_deit_lt_run_at_ratio_100() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "vision-deit-lt.yaml").read_text())
    job = parse_manifest(manifest)
    config = job.spec.workload.vision
    assert config is not None
    assert config.model.preset == "tiny"
    assert config.data.imbalance_ratio == 100
    assert (config.teacher.sam, config.distill.ood_augmentation, config.distill.drw) == (
        True,
        True,
        True,
    )


def test_the_recipes_switch_the_pieces_of_deit_lt() -> None:
    vit, deit, deit_lt = (VisionConfig.model_validate(VISION_RECIPES[k]) for k in VISION_RECIPES)
    assert not vit.distill.enabled
    assert deit.distill.enabled
    assert not deit.teacher.sam
    assert not deit.distill.ood_augmentation
    assert not deit.distill.drw
    assert deit_lt.teacher.sam
    assert deit_lt.distill.ood_augmentation
    assert deit_lt.distill.drw


@pytest.mark.parametrize(
    ("fields", "path", "rule"),
    [
        ({"data": {"imbalanceRatio": 0.5}}, "spec.workload.vision.data.imbalanceRatio", "1"),
        ({"model": {"preset": "huge"}}, "spec.workload.vision.model.preset", "tiny"),
        ({"model": {"patchSize": 3}}, "spec.workload.vision.model", "divisible by patchSize"),
        ({"data": {"source": "image-folder"}}, "spec.workload.vision.data", "path is required"),
        ({"teacher": {"epochs": 0}}, "spec.workload.vision", "teacher.epochs must be at least"),
        ({"distill": {"drwStart": 1.5}}, "spec.workload.vision.distill.drwStart", "1"),
    ],
)
def test_a_bad_vision_config_is_refused_with_its_field_path(
    fields: dict, path: str, rule: str
) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_vision(**fields))
    assert [e.path for e in info.value.errors] == [path]
    assert rule in str(info.value.errors[0])


def test_a_plain_vit_needs_no_teacher_epochs() -> None:
    job = parse_manifest(make_job().with_vision(distill={"enabled": False}, teacher={"epochs": 0}))
    assert job.spec.workload.kind == "vision"


def test_an_image_folder_outside_the_namespace_folders_is_refused(tmp_path: Path) -> None:
    folders = LocalFolders(
        state_dir=tmp_path / "state", roots=(LocalRoot(str(tmp_path / "shared" / "{namespace}")),)
    )
    inside = str(tmp_path / "shared" / "team-a" / "images")
    for path, refused in (("/etc", True), (inside, False)):
        job = parse_manifest(make_job().with_vision(data={"source": "image-folder", "path": path}))
        why = dict(refused_paths(job, "team-a", folders))
        assert ("spec.workload.vision.data.path" in why) is refused
