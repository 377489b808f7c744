"""A tenant's token reaches its own namespace's folders and nothing else: real `carina up`.

A token limited to team-a may not start from, resume from or prune another namespace's
checkpoints, nor name any other file of the machine: such a job is refused with 422 naming
the field, while its own folders (the run folders, /<root>/team-a/) work end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, wait_for_phase

from carina.platform.cli.client import ApiError, CarinaClient

TEAM_A_TOKEN = "team-a-token-0123456789abcdef"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    state = tmp_path / "state"
    state.mkdir()
    tokens = {"tokens": [{"name": "alice", "token": TEAM_A_TOKEN, "namespaces": ["team-a"]}]}
    (state / "tokens.yaml").write_text(yaml.safe_dump(tokens))
    roots = f'["{tmp_path}/shared/{{namespace}}"]'
    up = CarinaUp(
        state,
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.02", "CARINA_LOCAL_ROOTS": roots},
    )
    up.start()
    try:
        yield up
    finally:
        up.stop()


def refusal(client: CarinaClient, manifest: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        client.create("team-a", manifest)
    return e.value


def test_a_team_a_token_cannot_name_another_namespace_or_the_machine(
    platform: CarinaUp, tmp_path: Path
) -> None:
    alice = CarinaClient(platform.url, TEAM_A_TOKEN)
    team_b = f"file://{platform.state_dir}/jobs/team-b/secret-0123abcd/checkpoints"

    passwd = refusal(alice, make_job("passwd").with_spec(checkpoint={"uri": "file:///etc/passwd"}))
    assert passwd.status == 422
    assert passwd.errors[0]["path"] == "spec.checkpoint.uri"
    assert passwd.errors[0]["rule"].startswith(
        "file:///etc/passwd is outside the folders namespace team-a may use: "
    )

    prune = refusal(alice, make_job("prune").with_spec(checkpoint={"uri": team_b, "keep": 1}))
    assert prune.status == 422
    assert prune.errors[0]["path"] == "spec.checkpoint.uri"
    start = refusal(alice, make_job("start").with_pretrain(init=f"{team_b}/step-00000010"))
    assert start.status == 422
    assert start.errors[0]["path"] == "spec.workload.pretrain.init"
    climb = f"file://{tmp_path}/shared/team-a/../team-b/ckpt"
    sneaky = refusal(alice, make_job("climb").with_spec(checkpoint={"uri": climb}))
    assert sneaky.status == 422
    assert f"that is {tmp_path}/shared/team-b/ckpt" in sneaky.message
    assert alice.list_jobs("team-a") == []


def test_a_team_a_job_runs_in_its_own_shared_folder(platform: CarinaUp, tmp_path: Path) -> None:
    alice = CarinaClient(platform.url, TEAM_A_TOKEN)
    uri = f"file://{tmp_path}/shared/team-a/pipeline/pretrain"
    job = make_job("own").with_pretrain(steps=20)
    job = job.with_spec(checkpoint={"uri": uri, "intervalSteps": 5})
    alice.create("team-a", job)
    done = wait_for_phase(alice, "own", ["Succeeded", "Failed"], 60, namespace="team-a")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["lastCheckpoint"]["uri"].startswith(uri)
