"""The operator's pipeline index: which dependents an upstream's watch event wakes."""

from __future__ import annotations

from typing import Any

from builders import make_job

from carina.operators.runtime.cache import Cache
from carina.operators.trainingjob.pipelines import Pipelines

NS = "ns"


def body(name: str, base: str | None = None, phase: str | None = None, step: int = 0, rv: int = 1):
    manifest: dict[str, Any] = dict(make_job(name))
    if base is not None:
        manifest["spec"]["workload"] = {"finetune": {"base": base}}
    manifest["metadata"].update(namespace=NS, resourceVersion=str(rv))
    if phase is not None:
        manifest["status"] = {"phase": phase, "progress": {"step": step, "totalSteps": 10}}
    return manifest


def noted(pipelines: Pipelines, manifest: dict[str, Any]) -> set[tuple[str, str]]:
    key = pipelines.cache.put_job(manifest)
    return pipelines.noted(key, manifest)


def test_an_upstream_wakes_its_dependents_when_its_phase_or_step_moves() -> None:
    p = Pipelines(Cache())
    noted(p, body("finetune", base="job://pretrain"))
    noted(p, body("evaluate", base="job://pretrain"))
    assert noted(p, body("pretrain", phase="Pending")) == {(NS, "finetune"), (NS, "evaluate")}
    assert noted(p, body("pretrain", phase="Pending", rv=2)) == set()  # nothing new
    assert noted(p, body("pretrain", phase="Running", rv=3)) == {(NS, "finetune"), (NS, "evaluate")}
    assert noted(p, body("pretrain", phase="Running", step=4, rv=4)) == {
        (NS, "finetune"),
        (NS, "evaluate"),
    }


def test_a_job_that_names_another_upstream_leaves_the_old_ones_list() -> None:
    p = Pipelines(Cache())
    noted(p, body("finetune", base="job://pretrain"))
    noted(p, body("finetune", base="job://other", rv=2))
    assert noted(p, body("pretrain", phase="Running")) == set()
    assert noted(p, body("other", phase="Running")) == {(NS, "finetune")}


def test_a_deleted_upstream_wakes_its_dependents_and_a_recreated_one_too() -> None:
    p = Pipelines(Cache())
    noted(p, body("finetune", base="job://pretrain"))
    key = p.cache.put_job(body("pretrain", phase="Running"))
    p.noted(key, body("pretrain", phase="Running"))
    p.cache.drop_job(body("pretrain"))
    assert p.dropped(key) == {(NS, "finetune")}
    assert noted(p, body("pretrain", rv=7)) == {(NS, "finetune")}


def test_the_lookup_reads_the_cache_and_ignores_a_job_being_deleted() -> None:
    p = Pipelines(Cache())
    noted(p, body("pretrain", phase="Running", step=3))
    view = p.lookup(NS)
    found = view("pretrain")
    assert found is not None
    assert found.phase == "Running"
    assert view("nope") is None
    going = body("pretrain", phase="Running", rv=9)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p.cache.put_job(going)
    assert view("pretrain") is None
