"""The TrainingJob models: defaults a user relies on, and the rules that refuse bad input."""

from __future__ import annotations

import re

import pytest
from builders import BAD_MANIFESTS, make_job

from carina.platform.api.manifests import ManifestError, parse_manifest
from carina.platform.api.types import ClusterProfile, TrainingJob
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


# -- the worker pod template ----------------------------------------------------------------


def with_template(spec: dict | None = None, metadata: dict | None = None) -> dict:
    template = {k: v for k, v in (("spec", spec), ("metadata", metadata)) if v is not None}
    return make_job().with_spec(template=template)


def bracketed(path: str) -> str:
    """A field path as the API server writes it: list indices in brackets (env[0].name)."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path)


FULL_TEMPLATE = {
    "metadata": {"labels": {"team": "research"}, "annotations": {"owner": "me"}},
    "spec": {
        "env": [
            {"name": "NCCL_DEBUG", "value": "INFO"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        ],
        "envFrom": [{"secretRef": {"name": "s3-credentials"}, "prefix": "S3_"}],
        "volumes": [{"name": "corpus", "persistentVolumeClaim": {"claimName": "corpus"}}],
        "volumeMounts": [{"name": "corpus", "mountPath": "/data", "readOnly": True}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        "serviceAccountName": "trainer",
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "registry"}],
        "priorityClassName": "research-high",
    },
}


def test_a_template_in_kubernetes_shapes_round_trips() -> None:
    job = parse_manifest(make_job().with_spec(template=FULL_TEMPLATE))
    assert job.to_wire()["spec"]["template"] == FULL_TEMPLATE
    assert TrainingJob.parse(job.to_wire()) == job


# A template that breaks one rule, and the field path the error names (the API server's
# refusals of the same templates are tests/integration/test_crd_apiserver.py's).
BAD_TEMPLATES: dict[str, tuple[dict, str]] = {
    "env-sets-rank": (
        with_template({"env": [{"name": "RANK", "value": "3"}]}),
        "spec.template.spec.env[0].name",
    ),
    "env-sets-a-carina-name": (
        with_template({"env": [{"name": "A", "value": "1"}, {"name": "CARINA_JOB", "value": "x"}]}),
        "spec.template.spec.env[1].name",
    ),
    "env-sets-the-pvc-root": (
        with_template({"env": [{"name": "CARINA_PVC_MOUNT_ROOT", "value": "/data"}]}),
        "spec.template.spec.env[0].name",
    ),
    "env-twice": (
        with_template({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
        "spec.template.spec.env",
    ),
    "env-from-prefix-begins-a-contract-name": (
        with_template({"envFrom": [{"prefix": "MASTER_", "secretRef": {"name": "s"}}]}),
        "spec.template.spec.envFrom[0].prefix",
    ),
    "env-from-two-sources": (
        with_template({"envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]}),
        "spec.template.spec.envFrom[0]",
    ),
    "volume-named-spec": (
        with_template({"volumes": [{"name": "spec", "emptyDir": {}}]}),
        "spec.template.spec.volumes[0].name",
    ),
    "volume-named-like-a-claim-volume": (
        with_template({"volumes": [{"name": "carina-pvc-ckpts", "emptyDir": {}}]}),
        "spec.template.spec.volumes[0].name",
    ),
    "mount-over-the-spec": (
        with_template(
            {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/etc/carina"}],
            }
        ),
        "spec.template.spec.volumeMounts[0].mountPath",
    ),
    "mount-under-the-pvc-root": (
        with_template(
            {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/mnt/pvc/ckpts"}],
            }
        ),
        "spec.template.spec.volumeMounts[0].mountPath",
    ),
    "mount-of-no-volume": (
        with_template({"volumeMounts": [{"name": "missing", "mountPath": "/data"}]}),
        "spec.template.spec.volumeMounts",
    ),
    "carina-label": (
        with_template(metadata={"labels": {"carina.dev/job": "other"}}),
        "spec.template.metadata.labels",
    ),
    "container-field-not-in-the-template": (
        with_template({"command": ["sleep", "infinity"]}),
        "spec.template.spec.command",
    ),
    # Kubernetes' rules the CRD cannot state (a map's keys, a total size): the pod would be
    # refused, so `carina validate`, the REST API and the operator refuse the job first.
    "label-key-with-a-space": (
        with_template(metadata={"labels": {"team a": "x"}}),
        "spec.template.metadata.labels",
    ),
    "annotation-key-with-a-colon": (
        with_template(metadata={"annotations": {"a:b": "x"}}),
        "spec.template.metadata.annotations",
    ),
    "annotations-over-256KiB": (
        with_template(metadata={"annotations": {f"k{i}": "x" * 16384 for i in range(17)}}),
        "spec.template.metadata.annotations",
    ),
    "node-selector-key-with-two-slashes": (
        with_template({"nodeSelector": {"a/b/c": "x"}}),
        "spec.template.spec.nodeSelector",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TEMPLATES))
def test_template_setting_what_carina_owns_is_refused_with_its_field_path(case: str) -> None:
    manifest, path = BAD_TEMPLATES[case]
    with pytest.raises(ManifestError) as info:
        parse_manifest(manifest)
    assert path in [bracketed(e.path) for e in info.value.errors], info.value.errors


def test_env_from_without_a_prefix_and_unreserved_prefixes_are_accepted() -> None:
    for prefix in (None, "", "AWS_", "CARINA_S3_"):
        source: dict = {"secretRef": {"name": "s3-credentials"}}
        if prefix is not None:
            source["prefix"] = prefix
        parse_manifest(with_template({"envFrom": [source]}))


@pytest.mark.parametrize(
    "labels",
    [
        {"team": "research"},
        {"example.com/team": "a.b_c-d"},
        {"app.kubernetes.io/name": ""},
        {"A9": "Z"},
        {"x" * 63: "y" * 63},
        {"a" * 253 + "/b": "c"},
    ],
)
def test_labels_kubernetes_accepts_are_accepted(labels: dict[str, str]) -> None:
    manifest = make_job().with_labels(labels).with_spec(template={"metadata": {"labels": labels}})
    job = parse_manifest(manifest)
    assert job.metadata.labels == labels


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("-team", "name part"),
        ("team-", "name part"),
        ("x" * 64, "name part"),
        ("/team", "prefix part must be non-empty"),
        ("Example.com/team", "prefix part"),
        ("a" * 254 + "/b", "prefix part"),
        ("a/b/c", "at most one '/'"),
        ("example.com/", "name part must be non-empty"),
    ],
)
def test_label_keys_kubernetes_refuses_are_refused_with_its_rule(key: str, rule: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_labels({key: "x"}))
    [error] = info.value.errors
    assert error.path == "metadata.labels"
    assert rule in error.rule


def test_annotation_keys_may_have_capitals_as_kubernetes_allows() -> None:
    job = parse_manifest(make_job().with_annotations({"Example.COM/Owner": "me"}))
    assert job.metadata.annotations == {"Example.COM/Owner": "me"}


@pytest.mark.parametrize(
    "uri", ["s3://ckpts/run\x00", "/ckpts/\nforged log line", "pvc://claim/\x7f", "file:///c\u0085"]
)
def test_uris_with_control_characters_are_refused_naming_the_character(uri: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_spec(checkpoint={"uri": uri}))
    [error] = info.value.errors
    assert error.path == "spec.checkpoint.uri"
    assert "must not contain control characters" in error.rule


def test_uris_and_paths_with_unicode_and_spaces_are_accepted() -> None:
    job = parse_manifest(
        make_job()
        .with_spec(checkpoint={"uri": "s3://ckpts/run 1/é"})
        .with_pretrain(data={"source": "files", "paths": ["/data/corpus #1/*.txt"]})
    )
    assert job.spec.checkpoint.uri == "s3://ckpts/run 1/é"


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"replicas": 2.0}, "spec.replicas"),
        ({"priority": "5"}, "spec.priority"),
        ({"failurePolicy": {"maxRestarts": False}}, "spec.failurePolicy.maxRestarts"),
        (
            {"failurePolicy": {"permanentExitCodes": [True]}},
            "spec.failurePolicy.permanentExitCodes",
        ),
        ({"resources": {"gpus": "1"}}, "spec.resources.gpus"),
    ],
)
def test_integers_are_integers_not_booleans_strings_or_floats(spec: dict, path: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_spec(**spec))
    assert any(e.path.startswith(path) for e in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("pretrain", "path"),
    [
        ({"steps": True}, "spec.workload.pretrain.steps"),
        ({"optimizer": {"lr": "0.001"}}, "spec.workload.pretrain.optimizer.lr"),
        ({"optimizer": {"lr": True}}, "spec.workload.pretrain.optimizer.lr"),
        ({"compile": "yes"}, "spec.workload.pretrain.compile"),
    ],
)
def test_workload_numbers_and_switches_have_their_json_types(pretrain: dict, path: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(make_job().with_pretrain(**pretrain))
    assert any(e.path.startswith(path) for e in info.value.errors), info.value.errors


def test_yaml_integers_and_integral_floats_where_floats_go_are_accepted() -> None:
    job = parse_manifest(make_job().with_pretrain(steps=30, optimizer={"lr": 1, "betas": [1, 0.9]}))
    config = job.spec.workload.pretrain
    assert config is not None
    assert config.steps == 30
    assert config.optimizer.lr == 1.0
