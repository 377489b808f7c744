"""The Dockerfiles: multi-stage, non-root, the worker on CUDA, entrypoints the chart expects.

No image is built here (no container runtime on CI's machines); these tests hold the
Dockerfiles to what the chart and the operator assume of the images.
"""

from __future__ import annotations

import re

import pytest
from helm_chart import ROOT

from carina.platform.planning.render import WORKER_COMMAND

DOCKER = ROOT / "docker"
IMAGES = ("operator", "server", "worker")


def _stages(name: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = (DOCKER / f"Dockerfile.{name}").read_text()
    lines = [
        line
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line.strip())
    return stages


def _last(stage: list[str], instruction: str) -> str:
    found = [line for line in stage if line.upper().startswith(instruction + " ")]
    assert found, f"no {instruction}"
    return found[-1].split(" ", 1)[1]


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_builds_in_stages_and_runs_as_a_numeric_non_root_user(name: str) -> None:
    stages = _stages(name)
    assert len(stages) >= 2
    user = _last(stages[-1], "USER")
    # runAsNonRoot can only verify a numeric uid.
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    # The final stage copies the built environment, it does not install Carina itself.
    assert any(line.startswith("COPY --from=build") for line in stages[-1])
    assert not any("pip install" in line for line in stages[-1])


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_copies_only_what_exists(name: str) -> None:
    for stage in _stages(name):
        for line in stage:
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), source
    assert (DOCKER / f"Dockerfile.{name}.dockerignore").exists()


def test_the_worker_image_is_cuda_and_runs_the_operators_worker_command() -> None:
    text = (DOCKER / "Dockerfile.worker").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-runtime-", text, re.M)
    stages = _stages("worker")
    assert all(
        stage[0] == "FROM ${CUDA_IMAGE}" or stage[0].startswith("FROM ${CUDA_IMAGE} ")
        for stage in stages
    )
    assert _last(stages[-1], "ENTRYPOINT") == str(list(WORKER_COMMAND)).replace("'", '"')


def test_the_operator_and_server_images_start_what_the_chart_expects() -> None:
    assert _last(_stages("operator")[-1], "ENTRYPOINT") == '["python", "-m", "carina.operators"]'
    server = _last(_stages("server")[-1], "ENTRYPOINT")
    # The chart passes only uvicorn's --host/--port/--log-level as args.
    assert server == '["uvicorn", "--factory", "carina.platform.controlplane.main:create_app"]'
    assert (ROOT / "platform" / "controlplane" / "main.py").exists()


def test_no_image_installs_torch_except_the_worker() -> None:
    for name in ("operator", "server"):
        instructions = [line for stage in _stages(name) for line in stage]
        assert not [line for line in instructions if "torch" in line]
        assert any(f"pip install '.[{name}]'" in line for line in instructions)
