"""A staged run's stage, from the worker's metrics to status, `kubectl get` and `carina get`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import make_job
from prometheus_client import generate_latest
from typer.testing import CliRunner

from carina.platform.api import crd
from carina.platform.cli import jobs
from carina.platform.cli.main import app
from carina.platform.planning.progress import read_scrape
from carina.workloads.runtime.telemetry import Telemetry

NOW = datetime(2026, 1, 1, tzinfo=UTC)
runner = CliRunner()


def scraped_progress(t: Telemetry) -> dict[str, Any]:
    scrape = read_scrape(generate_latest(t.registry).decode(), NOW)
    assert scrape.progress is not None
    return scrape.progress.to_wire()


def test_the_stage_reaches_progress_by_name_index_and_count() -> None:
    t = Telemetry("lc", "default", 0, total_steps=30)
    t.on_stage(0, "short-8k", 3)
    t.on_step(5, 2.0, 1e-3, 512, 1000.0, 0.0)
    assert scraped_progress(t)["stage"] == "short-8k"
    t.on_stage(1, "long-32k", 3)  # the next stage replaces the series, it does not add one
    progress = scraped_progress(t)
    assert (progress["stage"], progress["stageIndex"], progress["stageCount"]) == (
        "long-32k",
        2,
        3,
    )


def test_a_run_without_stages_reports_no_stage() -> None:
    t = Telemetry("plain", "default", 0, total_steps=30)
    t.on_step(5, 2.0, 1e-3, 512, 1000.0, 0.0)
    progress = scraped_progress(t)
    assert "stage" not in progress
    assert "stageCount" not in progress


def test_kubectl_get_has_a_stage_column_from_status() -> None:
    columns = {c["name"]: c for c in crd.PRINTER_COLUMNS}
    assert columns["Stage"]["jsonPath"] == ".status.progress.stage"
    names = [c["name"] for c in crd.PRINTER_COLUMNS]
    assert names.index("Stage") == names.index("Loss") + 1


def test_carina_get_shows_the_stage_name_and_position(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.out, "width", 160)  # a wide terminal: no column is cut short
    job = json.loads(json.dumps(make_job("lc")))
    job["status"] = {
        "phase": "Running",
        "progress": {
            "step": 12,
            "totalSteps": 30,
            "loss": 2.5,
            "stage": "long-32k",
            "stageIndex": 2,
            "stageCount": 3,
        },
    }
    plain = json.loads(json.dumps(make_job("plain")))
    plain["status"] = {"phase": "Running", "progress": {"step": 3, "totalSteps": 9}}
    jobs._print_jobs([job, plain], "table")
    lines = capsys.readouterr().out.splitlines()
    assert "STAGE" in lines[0]
    row = next(line for line in lines if line.startswith("lc "))
    assert "long-32k 2/3" in row
    other = next(line for line in lines if line.startswith("plain "))
    assert "3/9" in other
    assert "long-32k" not in other


@pytest.mark.parametrize(
    ("stages", "sources", "words"),
    [
        (
            [{"name": "long", "steps": 20, "mixture": {"web": 1.0}}],
            {"code": {"source": "python-stdlib"}},
            "stages[0].mixture names 'web', which sources does not define (defined: code)",
        ),
        (
            [{"name": "long", "steps": 20, "seqLen": 4096}],
            None,
            "stages[0].seqLen (4096) must not exceed model.maxSeqLen (256)",
        ),
        (
            [{"name": "long", "steps": 20, "mixture": {"code": -1.0}}],
            {"code": {"source": "python-stdlib"}},
            "greater than 0",
        ),
    ],
)
def test_validate_names_the_stage_field_and_the_rule(
    tmp_path: Path, stages: list[dict[str, Any]], sources: dict[str, Any] | None, words: str
) -> None:
    fields: dict[str, Any] = {"stages": stages}
    if sources is not None:
        fields["sources"] = sources
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(make_job().with_pretrain(**fields)))))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "spec.workload.pretrain" in said
    assert words in said
    assert "Traceback" not in result.output
