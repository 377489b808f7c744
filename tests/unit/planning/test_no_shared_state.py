"""Planning changes its own copies only: rendering a pod and planning a job leave the job, its
last status and the other pods as they were (the pod template and the action are applied in
place to objects the planner has just built)."""

from __future__ import annotations

import json

import pytest
from planning_fakes import T0, failed, running, tj

from carina.platform.api.types import Phase
from carina.platform.planning.engine import plan
from carina.platform.planning.render import RenderSettings, build_worker_pod

TEMPLATE = {
    "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
    "spec": {
        "env": [{"name": "X", "value": "1"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "nodeSelector": {"pool": "a"},
    },
}


def test_pods_of_one_job_share_nothing_and_leave_the_job_alone() -> None:
    job = tj(4, template=TEMPLATE, checkpoint={"uri": "pvc://ckpts/run"})
    before = json.dumps(job.model_dump(mode="json"), sort_keys=True)
    settings = RenderSettings()
    first = build_worker_pod(job, 0, 0, settings)
    second = build_worker_pod(job, 0, 0, settings)
    assert first == second
    # Change everything in one: the other, and the next one rendered, do not see it.
    first["metadata"]["labels"]["team"] = "b"
    first["spec"]["volumes"].append({"name": "more"})
    first["spec"]["tolerations"].append({"key": "more"})
    first["spec"]["containers"][0]["env"].append({"name": "MORE"})
    first["spec"]["containers"][0]["volumeMounts"].append({"name": "more"})
    assert second == build_worker_pod(job, 0, 0, settings)
    assert json.dumps(job.model_dump(mode="json"), sort_keys=True) == before


@pytest.mark.parametrize(
    ("workers", "phase"),
    [([], Phase.PENDING), ([running(0), running(1)], Phase.STARTING), ([failed(0)], Phase.RUNNING)],
)
def test_plan_leaves_the_last_written_status_as_it_was(workers, phase) -> None:
    first = plan(tj(2), [], T0).status
    job = tj(2).model_copy(update={"status": first.model_copy(update={"phase": phase})})
    assert job.status is not None
    before = json.dumps(job.status.model_dump(mode="json"), sort_keys=True)
    decided = plan(job, workers, T0)
    assert decided.status is not job.status
    assert json.dumps(job.status.model_dump(mode="json"), sort_keys=True) == before
