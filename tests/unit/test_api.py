"""The TrainingJob models: defaults a user relies on, and the rules that refuse bad input."""

from __future__ import annotations

import pytest
from builders import BAD_MANIFESTS, make_job

from carina.platform.api import ClusterProfile, TrainingJob
from carina.platform.manifests import ManifestError, parse_manifest
from carina.workloads.config import PERMANENT_EXIT_CODES, ExitCode


def test_minimal_manifest_gets_documented_defaults() -> None:
    job = parse_manifest(make_job())
    assert job.spec.workload.kind == "pretrain"
    assert job.spec.cluster == ClusterProfile.NONE
    assert job.spec.failure_policy.max_restarts == 3
    assert job.spec.checkpoint.keep == 3
    assert set(job.spec.failure_policy.permanent_exit_codes) == {
        int(c) for c in PERMANENT_EXIT_CODES
    }
    assert ExitCode.PREEMPTED not in job.spec.failure_policy.permanent_exit_codes


def test_wire_form_uses_camel_case_and_round_trips() -> None:
    job = parse_manifest(make_job().with_pretrain(batchSize=16, microBatchSize=4))
    wire = job.to_wire()
    assert wire["spec"]["workload"]["pretrain"]["microBatchSize"] == 4
    assert "failurePolicy" in wire["spec"]
    assert TrainingJob.parse(wire) == job


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_refused_with_its_field_path(case: str) -> None:
    manifest, path = BAD_MANIFESTS[case]
    with pytest.raises(ManifestError) as info:
        parse_manifest(manifest)
    assert any(e.path.startswith(path) for e in info.value.errors), info.value.errors


def test_unknown_field_error_says_unknown_field() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_spec(replicaz=2))
    assert [str(e) for e in info.value.errors] == ["spec.replicaz: unknown field"]


def test_model_overrides_apply_on_top_of_the_preset() -> None:
    job = parse_manifest(make_job().with_pretrain(model={"preset": "small", "nKvHeads": 1}))
    config = job.spec.workload.pretrain
    assert config is not None
    arch = config.model.resolve()
    assert (arch.d_model, arch.n_heads, arch.n_kv_heads) == (256, 4, 1)


def test_heads_must_divide_evenly() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_pretrain(model={"preset": "tiny", "nKvHeads": 3}))
    assert "nHeads must be divisible by nKvHeads" in str(info.value)


def test_job_name_must_fit_worker_pod_names() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job("x" * 51))
    assert info.value.errors[0].path == "metadata.name"
