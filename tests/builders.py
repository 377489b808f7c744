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

    def with_labels(self, labels: dict[str, str]) -> JobBuilder:
        job = self._copy()
        job["metadata"]["labels"] = labels
        return job

    def with_annotations(self, annotations: dict[str, str]) -> JobBuilder:
        job = self._copy()
        job["metadata"]["annotations"] = annotations
        return job

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

    def with_vision(self, **fields: Any) -> JobBuilder:
        """A `vision` (DeiT-LT) workload in place of the job's own, with `fields` set."""
        job = self._copy()
        job["spec"]["workload"] = {"vision": {"model": {"preset": "tiny"}, **fields}}
        return job

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
    "topology-level-not-a-label-key": (
        make_job().with_spec(topology={"level": "Example.com/unit", "mode": "Required"}),
        "spec.topology.level",
    ),
    "unknown-topology-mode": (
        make_job().with_spec(topology={"level": "carina.dev/rack", "mode": "Sometimes"}),
        "spec.topology.mode",
    ),
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
    # Quantities are Kubernetes' and greater than zero: one bad job must not stop the others.
    "cpu-not-a-quantity": (make_job().with_spec(resources={"cpu": "abc"}), "spec.resources.cpu"),
    "cpu-zero": (make_job().with_spec(resources={"cpu": 0}), "spec.resources.cpu"),
    "memory-negative": (
        make_job().with_spec(resources={"memory": "-1Gi"}),
        "spec.resources.memory",
    ),
    "memory-empty": (make_job().with_spec(resources={"memory": ""}), "spec.resources.memory"),
    # Scalars have their JSON type.
    "replicas-a-boolean": (make_job().with_replicas(True), "spec.replicas"),
    "replicas-a-string": (make_job().with_replicas("2"), "spec.replicas"),
    "suspend-a-string": (make_job().with_spec(suspend="yes"), "spec.suspend"),
    # URIs and paths hold no control character.
    "nul-in-checkpoint-uri": (
        make_job().with_spec(checkpoint={"uri": "s3://ckpts/run\x00x"}),
        "spec.checkpoint.uri",
    ),
    "newline-in-data-path": (
        make_job().with_pretrain(data={"source": "files", "paths": ["/data/a\nb"]}),
        "spec.workload.pretrain.data.paths",
    ),
    "control-character-in-mount-path": (
        make_job().with_spec(
            template={
                "spec": {
                    "volumes": [{"name": "x", "emptyDir": {}}],
                    "volumeMounts": [{"name": "x", "mountPath": "/data\x1b[2J"}],
                }
            }
        ),
        "spec.template.spec.volumeMounts",
    ),
    # Labels and annotations as Kubernetes checks them.
    "label-key-with-a-space": (make_job().with_labels({"team a": "x"}), "metadata.labels"),
    "label-key-with-two-slashes": (make_job().with_labels({"a/b/c": "x"}), "metadata.labels"),
    "label-value-with-a-space": (make_job().with_labels({"team": "a b"}), "metadata.labels"),
    "label-value-too-long": (make_job().with_labels({"team": "x" * 64}), "metadata.labels"),
    "annotations-over-256KiB": (
        make_job().with_annotations({"notes": "x" * (256 * 1024)}),
        "metadata.annotations",
    ),
    "template-label-value-with-a-space": (
        make_job().with_spec(template={"metadata": {"labels": {"team": "a b"}}}),
        "spec.template.metadata.labels",
    ),
    "node-selector-value-with-a-space": (
        make_job().with_spec(template={"spec": {"nodeSelector": {"zone": "a b"}}}),
        "spec.template.spec.nodeSelector",
    ),
    # The vision workload (DeiT-LT).
    "vision-imbalance-ratio-below-one": (
        make_job().with_vision(data={"imbalanceRatio": 0.5}),
        "spec.workload.vision.data.imbalanceRatio",
    ),
    "vision-distillation-without-teacher-epochs": (
        make_job().with_vision(teacher={"epochs": 0}),
        "spec.workload.vision",
    ),
    # The sweep workload (learning-rate sweeps on Ray Tune).
    "sweep-proxy-trials-too-short-to-decay": (
        make_job().with_spec(workload={"sweep": {"batchSizes": [64], "tokens": [1000]}}),
        "spec.workload.sweep",
    ),
    "sweep-fewer-than-three-learning-rates": (
        make_job().with_spec(workload={"sweep": {"lrs": [0.001, 0.002]}}),
        "spec.workload.sweep.lrs",
    ),
    # Pipelines: job://<name> names a job of the same namespace; no job waits for itself.
    "job-reference-to-another-namespace": (
        make_job().with_spec(workload={"finetune": {"base": "job://team-b/pretrain"}}),
        "spec.workload.finetune.base",
    ),
    "job-reference-as-the-checkpoint-destination": (
        make_job().with_spec(checkpoint={"uri": "job://pretrain"}),
        "spec.checkpoint.uri",
    ),
    "depends-on-a-name-no-job-can-have": (
        make_job().with_spec(dependsOn=["Pre_Train"]),
        "spec.dependsOn[0]",
    ),
    "depends-on-itself": (make_job("demo").with_spec(dependsOn=["demo"]), "spec.dependsOn"),
    "starts-from-its-own-checkpoint": (
        make_job("demo").with_pretrain(init="job://demo"),
        "spec.workload.pretrain.init",
    ),
}


def make_cluster_queue(name: str = "team-a", **spec: Any) -> dict[str, Any]:
    """A valid ClusterQueue: 16 GPUs and 256 CPUs in the cohort `research`; `spec` overrides."""
    return {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "cohort": "research",
            "resources": [
                {"name": "nvidia.com/gpu", "nominalQuota": 16},
                {"name": "cpu", "nominalQuota": 256},
            ],
        }
        | spec,
    }


# Queueing objects that break one rule each: the field path both `carina validate` and the API
# server name, and words both say (the rule, or the name at fault).
BAD_QUEUE_MANIFESTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "lending-limit-above-nominal-quota": (
        make_cluster_queue(
            resources=[{"name": "nvidia.com/gpu", "nominalQuota": 16, "lendingLimit": 17}]
        ),
        "spec.resources[0]",
        "lendingLimit must not exceed nominalQuota",
    ),
    "lending-limit-above-nominal-quota-in-other-units": (
        make_cluster_queue(
            resources=[{"name": "memory", "nominalQuota": "1Ti", "lendingLimit": "1100Gi"}]
        ),
        "spec.resources[0]",
        "lendingLimit must not exceed nominalQuota",
    ),
    "a-resource-named-twice": (
        make_cluster_queue(
            resources=[
                {"name": "nvidia.com/gpu", "nominalQuota": 16},
                {"name": "nvidia.com/gpu", "nominalQuota": 8},
            ]
        ),
        "spec.resources",
        "nvidia.com/gpu",
    ),
    "an-unknown-resource": (
        make_cluster_queue(resources=[{"name": "nvidia.com/gpus", "nominalQuota": 16}]),
        "spec.resources[0].name",
        "nvidia.com/gpu",
    ),
    "a-negative-quota": (
        make_cluster_queue(resources=[{"name": "cpu", "nominalQuota": "-1"}]),
        "spec.resources[0].nominalQuota",
        "nominalQuota",
    ),
    "no-resources": (make_cluster_queue(resources=[]), "spec.resources", "resources"),
    "an-unknown-strategy": (
        make_cluster_queue(queueingStrategy="LIFO"),
        "spec.queueingStrategy",
        "StrictFIFO",
    ),
    "a-local-queue-without-its-cluster-queue": (
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "LocalQueue",
            "metadata": {"name": "training"},
            "spec": {},
        },
        "spec.clusterQueue",
        "clusterQueue",
    ),
    "a-priority-class-value-as-a-string": (
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "TrainingPriorityClass",
            "metadata": {"name": "urgent"},
            "value": "1000",
        },
        "value",
        "value",
    ),
}


# A created job, and a change of each spec field that cannot change while the job may run:
# the change (whole top-level spec fields), the field path a refusal names, and whether the
# change is allowed while the job is suspended (before and after it).
FIXED_FIELDS_JOB = make_job("fixed").with_spec(
    cluster="vela", resources={"gpus": 8}, checkpoint={"uri": "s3://bucket/a"}
)
SPEC_CHANGES: dict[str, tuple[dict[str, Any], str, bool]] = {
    "workload": (
        {"workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 40}}},
        "spec.workload",
        False,
    ),
    "checkpoint-uri": ({"checkpoint": {"uri": "s3://bucket/b"}}, "spec.checkpoint.uri", False),
    "replicas": ({"replicas": 3}, "spec.replicas", True),
    "resources": ({"resources": {"gpus": 4}}, "spec.resources", True),
    "cluster": ({"cluster": "blue-vela"}, "spec.cluster", True),
    "image": ({"image": "example.com/trainer:2"}, "spec.image", True),
    "template": ({"template": {"metadata": {"labels": {"team": "b"}}}}, "spec.template", True),
    "topology": ({"topology": {"level": "carina.dev/rack"}}, "spec.topology", True),
    "queue": ({"queue": "other"}, "spec.queue", True),
}
