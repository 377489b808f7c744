"""Pipelines on the embedded platform: `carina up` with stand-in workers (real processes).

Jobs that name each other's results (`job://<name>`) are submitted at once and run in order:
a downstream job has no worker, no run folder and no quota until its upstream has Succeeded,
then its worker reads the upstream's final checkpoint. An upstream that fails fails its
dependents, a missing one is waited for, and a loop is refused before it is stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, wait_for, wait_for_phase, worker_pids

from carina.platform.cli.client import ApiError, CarinaClient

NS = "default"
TASKS = [{"name": "ppl", "kind": "perplexity", "data": {"generator": "python-stdlib"}}]


def job(name: str, workload: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A one-worker job; the stand-in trains `steps` (default 20) of 0.05 s."""
    manifest = make_job(name).with_quick_pretrain(40)
    if workload is not None:
        manifest = manifest.with_spec(workload=workload)
    return dict(
        manifest.with_spec(
            resources={"cpu": "1", "memory": "64Mi"},
            checkpoint={"intervalSteps": 10},
            **spec,
        )
    )


def finetune(name: str, base: str) -> dict[str, Any]:
    return job(name, {"finetune": {"base": base}})


def evaluate(name: str, base: str, compare_to: str) -> dict[str, Any]:
    return job(name, {"evaluate": {"base": base, "compareTo": compare_to, "tasks": TASKS}})


def status(client: CarinaClient, name: str) -> dict[str, Any]:
    return client.get(NS, name).get("status") or {}


def condition(job_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in job_status.get("conditions", []) if c["type"] == type_), {})


def run_folders(up: CarinaUp, name: str) -> list[Path]:
    return list((up.state_dir / "jobs" / NS).glob(f"{name}-*"))


def carina(up: CarinaUp, *args: str) -> subprocess.CompletedProcess[str]:
    token = (up.state_dir / "token").read_text().strip()
    return subprocess.run(
        [sys.executable, "-m", "carina.platform", *args, "--server", up.url, "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def up(tmp_path: Path) -> Iterator[CarinaUp]:
    platform = CarinaUp(
        tmp_path / "state", STANDIN_WORKER, env={"CARINA_CAPACITY_CPUS": "4"}
    ).start()
    try:
        yield platform
    finally:
        platform.stop()


def test_a_pipeline_submitted_at_once_runs_in_order_with_no_early_workers(up: CarinaUp) -> None:
    client = up.client()
    for manifest in (
        job("pretrain"),
        finetune("finetune", "job://pretrain"),
        evaluate("evaluate", "job://finetune", "job://pretrain"),
    ):
        client.create(NS, manifest)

    # While the pretraining job runs, the others have no worker, no run folder and no quota.
    # Each look is taken before the upstream is seen not to have Succeeded yet.
    seen_waiting: list[str] = []
    while True:
        looks = {
            name: (worker_pids(up.state_dir, name), run_folders(up, name), status(client, name))
            for name in ("finetune", "evaluate")
        }
        pre = status(client, "pretrain")
        if pre.get("phase") == "Succeeded":
            break
        assert pre.get("phase") != "Failed", pre
        for name, (pids, folders, waiting) in looks.items():
            assert not pids, f"{name} started before its upstream"
            assert not folders, f"{name} prepared before its upstream"
            assert (waiting.get("queueing") or {}).get("admission") is None, waiting
        if condition(looks["finetune"][2], "Admitted"):
            seen_waiting.append(condition(looks["finetune"][2], "Admitted")["message"])
    assert any(m.startswith("waiting for job pretrain (Running, step ") for m in seen_waiting)
    assert condition(status(client, "evaluate"), "Admitted")["reason"] == "WaitingForUpstream"

    names = ("pretrain", "finetune", "evaluate")
    final = {n: wait_for_phase(client, n, ["Succeeded", "Failed"], 60)["status"] for n in names}
    assert {n: s["phase"] for n, s in final.items()} == dict.fromkeys(final, "Succeeded")
    assert all(s["restarts"] == 0 for s in final.values())
    pre, tuned, evaluated = final["pretrain"], final["finetune"], final["evaluate"]
    assert tuned["startTime"] >= pre["completionTime"]
    assert evaluated["startTime"] >= tuned["completionTime"]

    # Each reference resolved to its upstream's final checkpoint: in status, and in the spec
    # file the worker read.
    assert tuned["inputs"] == [
        {
            "field": "spec.workload.finetune.base",
            "job": "pretrain",
            "uri": pre["lastCheckpoint"]["uri"],
            "step": 40,
        }
    ]
    assert [(i["job"], i["uri"]) for i in evaluated["inputs"]] == [
        ("finetune", tuned["lastCheckpoint"]["uri"]),
        ("pretrain", pre["lastCheckpoint"]["uri"]),
    ]
    [folder] = run_folders(up, "evaluate")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["config"]["base"] == tuned["lastCheckpoint"]["uri"]
    assert spec["config"]["compareTo"] == pre["lastCheckpoint"]["uri"]

    shown = carina(up, "get", "finetune")
    assert shown.returncode == 0, shown.stderr
    assert "upstream: pretrain (Succeeded, step 40/40) via spec.workload.finetune.base" in (
        shown.stdout
    )
    assert "downstream: evaluate (Succeeded" in shown.stdout


def test_an_upstream_failure_fails_every_job_below_it_naming_its_upstream(
    tmp_path: Path,
) -> None:
    # Every first generation exits 65 (permanent) at step 3: only "a" ever runs.
    env = {"CARINA_CAPACITY_CPUS": "4", "STANDIN_EXIT_AT_STEP": "3", "STANDIN_EXIT_CODE": "65"}
    up = CarinaUp(tmp_path / "state", STANDIN_WORKER, env=env).start()
    try:
        client = up.client()
        client.create(NS, job("a"))
        client.create(NS, finetune("b", "job://a"))
        client.create(NS, evaluate("c", "job://b", "s3://ckpt/baseline"))
        a = wait_for_phase(client, "a", ["Failed", "Succeeded"], 60)["status"]
        assert condition(a, "Failed")["reason"] == "PermanentExitCode"
        b = wait_for_phase(client, "b", ["Failed", "Succeeded"], 30)["status"]
        c = wait_for_phase(client, "c", ["Failed", "Succeeded"], 30)["status"]
        assert condition(b, "Failed")["reason"] == "UpstreamFailed"
        assert condition(b, "Failed")["message"].startswith("upstream job a failed: PermanentExit")
        assert condition(c, "Failed")["reason"] == "UpstreamFailed"
        assert condition(c, "Failed")["message"].startswith("upstream job b failed: UpstreamFailed")
        for name, st in (("b", b), ("c", c)):
            assert st.get("startTime") is None
            assert st["restarts"] == 0
            assert not run_folders(up, name)
            events = [(e["type"], e["reason"]) for e in client.events(NS, name)]
            assert ("Warning", "UpstreamFailed") in events
            assert ("Normal", "Created") not in events
    finally:
        up.stop()


def test_a_job_whose_upstream_does_not_exist_yet_waits_for_it(up: CarinaUp) -> None:
    client = up.client()
    client.create(NS, finetune("later", "job://first"))
    waiting = wait_for(
        lambda: (s := status(client, "later")) and condition(s, "Admitted") and s,
        30,
        "later to say why it waits",
    )
    assert waiting["phase"] == "Pending"
    admitted = condition(waiting, "Admitted")
    assert (admitted["reason"], admitted["message"]) == (
        "UpstreamMissing",
        "job first does not exist (yet)",
    )
    shown = carina(up, "get", "later")
    assert "UpstreamMissing" in shown.stdout
    assert "upstream: first (does not exist) via spec.workload.finetune.base" in shown.stdout

    client.create(NS, job("first"))
    later = wait_for_phase(client, "later", ["Succeeded", "Failed"], 60)["status"]
    assert later["phase"] == "Succeeded"
    assert later["inputs"][0]["job"] == "first"


def test_a_job_that_would_close_a_loop_is_refused_naming_the_field(up: CarinaUp) -> None:
    client = up.client()
    client.create(NS, finetune("x", "job://y"))
    with pytest.raises(ApiError) as refused:
        client.create(NS, job("y", dependsOn=["z", "x"]))
    assert refused.value.status == 422
    assert [(e["path"], e["rule"]) for e in refused.value.errors] == [
        (
            "spec.dependsOn[1]",
            "the jobs' dependencies loop, so none of them can start: y -> x -> y",
        )
    ]
