"""The local paths a job may name on the embedded platform: its namespace's folders only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.embedded.paths import LocalFolders, LocalRoot, namespace_area, refused_paths

NS = "team-a"


def job_with(**spec: Any) -> TrainingJob:
    return TrainingJob.model_validate(make_job("demo").with_spec(**spec))


def folders(tmp_path: Path, *roots: LocalRoot) -> LocalFolders:
    return LocalFolders(
        state_dir=tmp_path / "state",
        roots=roots or (LocalRoot(str(tmp_path / "shared" / "{namespace}")),),
        pvc_mount_root=str(tmp_path / "pvc"),
    )


def refused(job: TrainingJob, f: LocalFolders, namespace: str = NS) -> dict[str, str]:
    return dict(refused_paths(job, namespace, f))


def test_the_namespace_area_holds_its_run_folders(tmp_path: Path) -> None:
    assert namespace_area(tmp_path, NS) == tmp_path / "jobs" / NS


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "/etc",
        "file://{state}/jobs/team-b/other-0123abcd/checkpoints",
        "file://{state}/jobs/team-a/../team-b/x",
        "file://{shared}/team-b/ckpt",
        "{shared}/team-a/../team-b",
        "pvc://claim/ckpt",
    ],
)
def test_a_checkpoint_uri_outside_the_namespace_folders_is_refused(
    tmp_path: Path, uri: str
) -> None:
    value = uri.format(state=tmp_path / "state", shared=tmp_path / "shared")
    why = refused(job_with(checkpoint={"uri": value}), folders(tmp_path))
    assert list(why) == ["spec.checkpoint.uri"]
    assert why["spec.checkpoint.uri"].startswith(value)
    assert "is outside the folders namespace team-a may use" in why["spec.checkpoint.uri"]
    assert str(tmp_path / "state" / "jobs" / NS) in why["spec.checkpoint.uri"]


def test_the_message_names_the_uri_the_rule_and_the_folders(tmp_path: Path) -> None:
    why = refused(job_with(checkpoint={"uri": "file:///etc/passwd"}), folders(tmp_path))
    assert why["spec.checkpoint.uri"] == (
        "file:///etc/passwd is outside the folders namespace team-a may use: "
        f"{tmp_path}/state/jobs/team-a, {tmp_path}/shared/team-a"
        " (its run folders, and the roots of CARINA_LOCAL_ROOTS)"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "file://{state}/jobs/team-a/pretrain-0123abcd/checkpoints",
        "{state}/jobs/team-a/pipeline/pretrain",
        "file://{shared}/team-a/pipeline/pretrain/step-00000600",
        "s3://bucket/team-b/anything",
    ],
)
def test_the_namespace_own_folders_and_s3_are_allowed(tmp_path: Path, uri: str) -> None:
    value = uri.format(state=tmp_path / "state", shared=tmp_path / "shared")
    assert refused(job_with(checkpoint={"uri": value}), folders(tmp_path)) == {}


def test_a_symlink_out_of_an_allowed_folder_is_followed_and_refused(tmp_path: Path) -> None:
    area = tmp_path / "shared" / NS
    area.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (area / "link").symlink_to(tmp_path / "elsewhere")
    why = refused(job_with(checkpoint={"uri": f"file://{area}/link/ckpt"}), folders(tmp_path))
    assert f"(that is {tmp_path}/elsewhere/ckpt)" in why["spec.checkpoint.uri"]


def test_every_path_valued_field_is_checked(tmp_path: Path) -> None:
    outside = "file:///etc/carina"
    pretrain = make_job("p").with_pretrain(
        init=outside, data={"source": "files", "paths": ["/etc/*.conf", "~/corpus/*.txt"]}
    )
    pretrain["spec"]["workload"]["pretrain"]["data"]["tokenizer"] = "/etc/tok.json"
    finetune = make_job("f").with_spec(
        workload={
            "finetune": {
                "base": outside,
                "data": {"path": "/etc/qa.jsonl", "format": "carina-qa"},
            }
        }
    )
    quantize = make_job("q").with_spec(
        workload={"quantize": {"base": outside, "data": {"source": "files", "paths": ["/x"]}}}
    )
    evaluate = make_job("e").with_spec(
        workload={
            "evaluate": {
                "base": outside,
                "compareTo": outside,
                "tasks": [
                    {"name": "ok", "kind": "perplexity", "data": {"generator": "python-stdlib"}},
                    {"name": "qa", "kind": "refusal", "data": {"path": "/etc/qa.jsonl"}},
                ],
            }
        }
    )
    f = folders(tmp_path)
    why = refused(TrainingJob.model_validate(pretrain), f)
    assert set(why) == {
        "spec.workload.pretrain.init",
        "spec.workload.pretrain.data.paths[0]",
        "spec.workload.pretrain.data.paths[1]",
        "spec.workload.pretrain.data.tokenizer",
    }
    home = Path("~").expanduser().resolve()
    assert why["spec.workload.pretrain.data.paths[1]"].startswith(
        f"~/corpus/*.txt (that is {home}/corpus/*.txt) is outside"
    )
    assert set(refused(TrainingJob.model_validate(finetune), f)) == {
        "spec.workload.finetune.base",
        "spec.workload.finetune.data.path",
    }
    assert set(refused(TrainingJob.model_validate(quantize), f)) == {
        "spec.workload.quantize.base",
        "spec.workload.quantize.data.paths[0]",
    }
    assert set(refused(TrainingJob.model_validate(evaluate), f)) == {
        "spec.workload.evaluate.base",
        "spec.workload.evaluate.compareTo",
        "spec.workload.evaluate.tasks[1].data.path",
    }


def test_a_relative_data_path_is_taken_from_the_run_folder_and_may_not_climb_out(
    tmp_path: Path,
) -> None:
    def paths(*patterns: str) -> TrainingJob:
        return TrainingJob.model_validate(
            make_job("p").with_pretrain(data={"source": "files", "paths": list(patterns)})
        )

    f = folders(tmp_path)
    assert refused(paths("corpus/*.txt", "../other-job-0123abcd/data.txt"), f) == {}
    assert set(refused(paths("../../team-b/secret.txt"), f)) == {
        "spec.workload.pretrain.data.paths[0]"
    }


def test_a_root_limited_to_some_namespaces_is_theirs_alone(tmp_path: Path) -> None:
    data = tmp_path / "datasets"
    f = folders(tmp_path, LocalRoot(str(data), namespaces=("team-a",)))
    job = TrainingJob.model_validate(
        make_job("p").with_pretrain(data={"source": "files", "paths": [f"{data}/*.txt"]})
    )
    assert refused(job, f, "team-a") == {}
    assert set(refused(job, f, "team-b")) == {"spec.workload.pretrain.data.paths[0]"}


def test_pvc_uris_are_checked_as_the_folder_workers_here_mount_them_at(tmp_path: Path) -> None:
    f = folders(tmp_path, LocalRoot(str(tmp_path / "pvc" / "team-a-claim")))
    assert refused(job_with(checkpoint={"uri": "pvc://team-a-claim/ckpt"}), f) == {}
    why = refused(job_with(checkpoint={"uri": "pvc://team-b-claim/ckpt"}), f)
    assert f"(that is {tmp_path}/pvc/team-b-claim/ckpt)" in why["spec.checkpoint.uri"]


def test_without_roots_only_the_namespace_area_is_allowed(tmp_path: Path) -> None:
    f = LocalFolders(state_dir=tmp_path / "state", roots=())
    assert refused(job_with(checkpoint={"uri": "file:///tmp/carina/team-a/x"}), f)
    own = f"file://{tmp_path}/state/jobs/team-a/pipeline"
    assert refused(job_with(checkpoint={"uri": own}), f) == {}
