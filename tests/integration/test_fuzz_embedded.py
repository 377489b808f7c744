"""Fuzzing a running `carina up` while a job trains: no server error, and the job finishes.

Schemathesis sends what the OpenAPI document (/openapi.json) allows and refuses to every
operation of a real `carina up` with workers on, while a stand-in worker job trains. The
only 5xx allowed is a 503 that says why (an ErrorResponse with a reason). The fuzzing is
bounded in examples (EXAMPLES per operation, about 250 in all) and in time (BUDGET_SECONDS,
after which the remaining examples are skipped); then the job must still succeed, untouched.
The operations are fuzzed in one test, each with hypothesis' `given`: schemathesis' pytest
loader for a schema known only at run time (`from_fixture`) fails under pytest 9.

The job holds the whole (configured) machine, so the jobs the fuzzer manages to create
queue behind it rather than start workers of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, wait_for_phase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

EXAMPLES = 25
BUDGET_SECONDS = 40.0
NAMESPACE, NAME = "fuzz-survivor", "trains-through-the-fuzz"
STEP_SECONDS = 0.1
STEPS = 300  # about 30 s of training: longer than the fuzzing takes


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarinaUp]:
    up = CarinaUp(
        tmp_path_factory.mktemp("fuzz") / "state",
        STANDIN_WORKER,
        env={
            "STANDIN_STEP_SECONDS": str(STEP_SECONDS),
            "CARINA_CAPACITY_CPUS": "1",
            "CARINA_CAPACITY_MEMORY": "2Gi",
            "CARINA_CAPACITY_GPUS": "0",
        },
    ).start()
    try:
        client = up.client()
        client.create(
            NAMESPACE,
            make_job(NAME)
            .with_pretrain(steps=STEPS)
            .with_spec(resources={"cpu": "1", "memory": "2Gi"}, checkpoint={"intervalSteps": 50}),
        )
        wait_for_phase(client, NAME, ["Running"], 60, namespace=NAMESPACE)
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def api_schema(platform: CarinaUp) -> Any:
    return schemathesis.openapi.from_url(f"{platform.url}/openapi.json")


@pytest.fixture(scope="module")
def token(platform: CarinaUp) -> str:
    return (platform.state_dir / "token").read_text().strip()


def server_errors_say_why(ctx: Any, response: Any, case: Any) -> None:  # noqa: ARG001
    """A 5xx only as a 503 with a reason (a full disk, a dependency down), never a crash."""
    if response.status_code < 500:
        return
    try:
        reason = (response.json().get("detail") or {}).get("reason")
    except (ValueError, AttributeError):
        reason = None
    if response.status_code != 503 or not reason:
        raise AssertionError(
            f"{case.operation.label}: {response.status_code} {response.text[:500]!r}"
        )


def test_fuzzing_a_running_platform_gives_no_server_error(api_schema: Any, token: str) -> None:
    deadline = time.monotonic() + BUDGET_SECONDS
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            # The same examples every run: a failure can be rerun, and a run never meets one of
            # hypothesis' own intermittent generation errors by chance.
            derandomize=True,
            database=None,  # no .hypothesis/ folder in the checkout
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            if time.monotonic() > deadline:
                return
            # Excluded as in the unit fuzz test (cross-field CEL rules, pydantic's lax mode);
            # not_a_server_error gives way to server_errors_say_why (a 503 with a reason).
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
                excluded_checks=[
                    positive_data_acceptance,
                    negative_data_rejection,
                    not_a_server_error,
                ],
                additional_checks=[server_errors_say_why],
            )

        fuzz()


def test_the_job_that_trained_through_the_fuzzing_succeeds(platform: CarinaUp) -> None:
    client = platform.client()
    job = wait_for_phase(client, NAME, ["Succeeded", "Failed"], 90, namespace=NAMESPACE)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 0
    assert status["progress"]["step"] == STEPS
    assert client.get(NAMESPACE, NAME)["metadata"]["generation"] == 1  # never suspended


def test_the_fuzzing_left_the_platform_ready(platform: CarinaUp) -> None:
    assert httpx.get(f"{platform.url}/readyz", timeout=10).status_code == 200
