"""`carina validate` and `carina get` on a pipeline's jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from builders import make_job
from typer.testing import CliRunner

from carina.platform.cli.main import app
from carina.platform.cli.pipelines import pipeline_lines

runner = CliRunner()
LOOP = "the jobs' dependencies loop, so none of them can start"


def finetune(name: str, base: str, **spec: Any) -> dict[str, Any]:
    return dict(make_job(name).with_spec(workload={"finetune": {"base": base}}, **spec))


def write(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump_all([json.loads(json.dumps(d)) for d in docs]))
    return path


def test_validate_refuses_a_loop_across_a_files_jobs_naming_each_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        finetune("a", "job://c"),
        finetune("b", "job://a"),
        dict(make_job("c").with_spec(dependsOn=["b"])),
        finetune("d", "job://a"),  # below the loop, not in it
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert f"{path}#0: invalid spec.workload.finetune.base: {LOOP}: a -> c -> b -> a" in said
    assert f"{path}#1: invalid spec.workload.finetune.base: {LOOP}: b -> a -> c -> b" in said
    assert f"{path}#2: invalid spec.dependsOn[0]: {LOOP}: c -> b -> a -> c" in said
    assert f"{path}#3: invalid" not in said
    assert "Traceback" not in result.output


def test_validate_accepts_a_chain_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        finetune("b", "job://a", dependsOn=["a"]),
        dict(make_job("a")),
        finetune("elsewhere", "job://not-in-this-file"),
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_validate_keeps_namespaces_apart(tmp_path: Path) -> None:
    a = finetune("a", "job://b")
    b = finetune("b", "job://a")
    a["metadata"]["namespace"], b["metadata"]["namespace"] = "team-a", "team-b"
    assert runner.invoke(app, ["validate", str(write(tmp_path, a, b))]).exit_code == 0


def stored(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {**manifest, "status": status}


def test_get_tells_why_a_job_waits_and_its_upstream_and_downstream_jobs() -> None:
    pretrain = stored(
        dict(make_job("pretrain")), phase="Running", progress={"step": 120, "totalSteps": 600}
    )
    waiting = {
        "type": "Admitted",
        "status": "False",
        "reason": "WaitingForUpstream",
        "message": "waiting for job pretrain (Running, step 120/600)",
    }
    tuned = stored(finetune("finetune", "job://pretrain"), phase="Pending", conditions=[waiting])
    evaluate = stored(finetune("evaluate", "job://finetune"), phase="Pending")
    lines = pipeline_lines(tuned, [pretrain, tuned, evaluate])
    assert lines == [
        "waiting: WaitingForUpstream: waiting for job pretrain (Running, step 120/600)",
        "upstream: pretrain (Running, step 120/600) via spec.workload.finetune.base",
        "downstream: evaluate (Pending)",
    ]


def test_get_shows_the_checkpoint_a_reference_resolved_to_and_a_missing_upstream() -> None:
    resolved = {
        "field": "spec.workload.finetune.base",
        "job": "pretrain",
        "uri": "s3://ckpt/pretrain/step-00000600",
    }
    tuned = stored(
        finetune("finetune", "job://pretrain", dependsOn=["data-prep"]),
        phase="Running",
        inputs=[resolved],
    )
    pretrain = stored(dict(make_job("pretrain")), phase="Succeeded")
    assert pipeline_lines(tuned, [pretrain, tuned]) == [
        "upstream: pretrain (Succeeded) via spec.workload.finetune.base"
        " -> s3://ckpt/pretrain/step-00000600",
        "upstream: data-prep (does not exist) via spec.dependsOn[0]",
    ]
