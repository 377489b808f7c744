"""Test builders: short, readable TrainingJob manifests (`make_job().with_replicas(4)`)."""

from __future__ import annotations

import copy
from typing import Any


class JobBuilder(dict[str, Any]):
    """A TrainingJob manifest as a dict, with chainable edits that return a copy."""

    def _copy(self) -> JobBuilder:
        return JobBuilder(copy.deepcopy(dict(self)))

    def with_name(self, name: str) -> JobBuilder:
        job = self._copy()
        job["metadata"]["name"] = name
        return job

    def with_replicas(self, replicas: Any) -> JobBuilder:
        return self.with_spec(replicas=replicas)

    def with_spec(self, **fields: Any) -> JobBuilder:
        job = self._copy()
        job["spec"].update(fields)
        return job

    def with_workload(self, kind: str, config: dict[str, Any]) -> JobBuilder:
        job = self._copy()
        job["spec"]["workload"][kind] = config
        return job

    def with_pretrain(self, **fields: Any) -> JobBuilder:
        job = self._copy()
        job["spec"]["workload"].setdefault("pretrain", {}).update(fields)
        return job

    def with_quick_pretrain(self, steps: int) -> JobBuilder:
        """The quickest real training run: tiny model, 400 KB of the stdlib corpus,
        8 sequences of 64 tokens a step, no evaluation (a step takes tens of ms on a CPU)."""
        return self.with_pretrain(
            model={"preset": "tiny"},
            data={"source": "python-stdlib", "maxBytes": 400_000},
            steps=steps,
            batchSize=8,
            microBatchSize=8,
            seqLen=64,
            evalEvery=0,
            schedule={"warmupSteps": 5},
        )

    def without(self, dotted: str) -> JobBuilder:
        job = self._copy()
        *parents, leaf = dotted.split(".")
        node = job
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
        return job


def make_job(name: str = "demo") -> JobBuilder:
    """A small valid pretrain job: tiny model, one CPU worker, a few steps."""
    return JobBuilder(
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 20}},
            },
        }
    )


# Manifests that break one rule each, with the field path the error must name. Unit tests
# check that `carina validate` refuses them; integration tests that the API server does.
BAD_MANIFESTS: dict[str, tuple[JobBuilder, str]] = {
    "unknown-field": (make_job().with_spec(replicaz=2), "spec.replicaz"),
    "negative-replicas": (make_job().with_replicas(-1), "spec.replicas"),
    "two-workload-members": (
        make_job().with_workload(
            "evaluate",
            {
                "base": "s3://ckpts/base",
                "tasks": [
                    {"name": "ppl", "kind": "perplexity", "data": {"generator": "code-choice"}}
                ],
            },
        ),
        "spec.workload",
    ),
    "no-workload-member": (make_job().with_spec(workload={}), "spec.workload"),
    "malformed-checkpoint-uri": (
        make_job().with_spec(checkpoint={"uri": "ftp://host/ckpt"}),
        "spec.checkpoint.uri",
    ),
    "batch-not-multiple-of-micro-batch": (
        make_job().with_pretrain(batchSize=6, microBatchSize=4),
        "spec.workload.pretrain",
    ),
    "unknown-preset": (
        make_job().with_pretrain(model={"preset": "huge"}),
        "spec.workload.pretrain.model.preset",
    ),
    "gpu-profile-without-gpus": (
        make_job().with_spec(cluster="vela", resources={"gpus": 0}),
        "spec",
    ),
}
