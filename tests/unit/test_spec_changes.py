"""What may change in a created job's spec: the rules' local half (`refused_changes`, the
embedded store's updates) agrees with the CEL transition rules the CRD carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import FIXED_FIELDS_JOB, SPEC_CHANGES, make_job

from carina.platform.api import crd
from carina.platform.api.spec_changes import (
    SPEC_CHANGE_RULES,
    SpecChangeRefused,
    refused_changes,
)
from carina.platform.api.types import TrainingJobSpec
from carina.platform.embedded.store import Store


def spec(**fields: object) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({**FIXED_FIELDS_JOB["spec"], **fields})


@pytest.mark.parametrize("case", sorted(SPEC_CHANGES))
def test_a_fixed_field_cannot_change_on_a_job_that_may_run(case: str) -> None:
    change, path, _ = SPEC_CHANGES[case]
    refused = refused_changes(spec(), spec(**change))
    assert [field for field, _ in refused] == [path]
    assert path in refused[0][1]


@pytest.mark.parametrize("case", sorted(SPEC_CHANGES))
def test_a_suspended_job_takes_only_placement_changes(case: str) -> None:
    change, path, while_suspended = SPEC_CHANGES[case]
    refused = refused_changes(spec(suspend=True), spec(suspend=True, **change))
    assert refused == ([] if while_suspended else [(path, refused[0][1])])


def test_suspending_and_resizing_in_one_change_is_refused() -> None:
    refused = refused_changes(spec(), spec(suspend=True, replicas=3))
    assert [field for field, _ in refused] == ["spec.replicas"]
    refused = refused_changes(spec(suspend=True), spec(suspend=False, replicas=3))
    assert [field for field, _ in refused] == ["spec.replicas"]


def test_policies_change_at_any_time() -> None:
    changed = spec(
        suspend=True,
        ttlSecondsAfterFinished=5,
        activeDeadlineSeconds=60,
        priority=10,
        failurePolicy={"maxRestarts": 7},
    )
    assert refused_changes(spec(), changed) == []


def test_a_default_written_out_is_no_change() -> None:
    old = TrainingJobSpec.model_validate(make_job()["spec"])
    assert refused_changes(old, old.model_copy(update={"replicas": 1})) == []
    written = {**make_job()["spec"], "resources": {"cpu": "1", "memory": "2Gi", "gpus": 0}}
    assert refused_changes(old, TrainingJobSpec.model_validate(written)) == []


def test_the_crd_carries_each_rule_on_the_spec_with_its_field_path() -> None:
    validations = crd.openapi_schema()["properties"]["spec"]["x-kubernetes-validations"]
    by_path = {v.get("fieldPath"): v for v in validations}
    for rule in SPEC_CHANGE_RULES:
        emitted = by_path["." + ".".join(rule.path)]
        assert emitted["message"] == rule.message
        assert "oldSelf" in emitted["rule"]
        assert ("oldSelf.suspend" in emitted["rule"]) == rule.while_suspended


# -- the embedded store's updates ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "carina.db")


def test_the_store_refuses_resizing_a_job_that_may_run(store: Store) -> None:
    store.create_job("ns", make_job("demo"), now=1.0)
    with pytest.raises(SpecChangeRefused) as refused:
        store.update_spec("ns", "demo", {"replicas": 3})
    assert refused.value.errors[0][0] == "spec.replicas"
    assert "spec.replicas" in str(refused.value)
    row = store.get_job("ns", "demo")
    assert row is not None
    assert json.loads(row.object_json())["spec"]["replicas"] == 1
    assert json.loads(row.metadata)["generation"] == 1


def test_the_store_resizes_a_suspended_job_at_a_new_generation(store: Store) -> None:
    store.create_job("ns", make_job("demo"), now=1.0)
    store.update_spec("ns", "demo", {"suspend": True})
    row = store.update_spec("ns", "demo", {"replicas": 3})
    assert row is not None
    assert json.loads(row.object_json())["spec"]["replicas"] == 3
    assert json.loads(row.metadata)["generation"] == 3


def test_the_store_keeps_a_suspended_jobs_workload(store: Store) -> None:
    store.create_job("ns", make_job("demo").with_spec(suspend=True), now=1.0)
    workload = {"pretrain": {"model": {"preset": "tiny"}, "steps": 40}}
    with pytest.raises(SpecChangeRefused) as refused:
        store.update_spec("ns", "demo", {"workload": workload})
    assert [field for field, _ in refused.value.errors] == ["spec.workload"]
