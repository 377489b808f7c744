"""A worker pod the API server refuses as invalid fails the job; other errors are retried."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from test_reconcile import FakeKube, reconcile, setup, status

from carina.operators.runtime.kube import Kube, Refused


def api_error(code: int, message: str = "") -> ApiException:
    exc = ApiException(status=code, reason="refused")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": code})
    return exc


def kube_answering(exc: ApiException) -> Kube:
    kube = Kube.__new__(Kube)

    def answer(*_args: Any, **_kwargs: Any) -> Any:
        raise exc

    kube.core = SimpleNamespace(
        create_namespaced_pod=answer,
        create_namespaced_service=answer,
        create_namespaced_config_map=answer,
    )
    return kube


POD = {"kind": "Pod", "metadata": {"name": "llm-worker-0-r0", "namespace": "ns"}}


@pytest.mark.parametrize("code", [400, 422])
def test_an_invalid_object_is_refused_with_the_api_servers_words(code: int) -> None:
    message = 'Pod "llm-worker-0-r0" is invalid: spec.containers[0].env[0].valueFrom: bad'
    kube = kube_answering(api_error(code, message))
    with pytest.raises(Refused) as info:
        asyncio.run(kube.create(POD))
    assert str(info.value) == f"Pod llm-worker-0-r0: {message}"


def test_an_object_that_exists_already_is_success() -> None:
    assert asyncio.run(kube_answering(api_error(409)).create(POD)) is None


@pytest.mark.parametrize("code", [403, 404, 429, 500, 503])
def test_other_refusals_stay_errors_a_later_reconcile_retries(code: int) -> None:
    with pytest.raises(ApiException):
        asyncio.run(kube_answering(api_error(code)).create(POD))


class RefusingKube(FakeKube):
    """The in-memory API, refusing worker pods as the API server refuses an invalid one."""

    def __init__(self, refusal: Exception) -> None:
        super().__init__()
        self.refusal = refusal

    async def create(self, manifest: dict[str, Any]) -> Any:
        if manifest["kind"] == "Pod" and manifest["metadata"]["name"].endswith("-0-r0"):
            self.calls.append(("create", f"Pod/{manifest['metadata']['name']}"))
            raise self.refusal
        return await super().create(manifest)


def refusing_setup(refusal: Exception) -> tuple[RefusingKube, Any]:
    fake, rec = setup(replicas=2)
    kube = RefusingKube(refusal)
    kube.objects, kube.rv = fake.objects, fake.rv
    rec.kube = kube
    return kube, rec


def test_a_refused_worker_fails_the_job_once_and_stops_the_gang() -> None:
    kube, rec = refusing_setup(Refused("Pod llm-worker-0-r0: spec.volumes[0]: bad"))
    reconcile(rec)
    failed = next(c for c in status(kube)["conditions"] if c["type"] == "Failed")
    assert status(kube)["phase"] == "Failed"
    assert failed["reason"] == "WorkersRefused"
    assert failed["message"] == "the API server refused Pod llm-worker-0-r0: spec.volumes[0]: bad"
    # The worker that was created goes; nothing is created again.
    kube.calls.clear()
    reconcile(rec)
    assert ("delete", "Pod/llm-worker-1-r0") in kube.calls
    assert not [c for c in kube.calls if c[0] == "create"]


def test_a_worker_the_api_server_could_not_take_now_is_retried() -> None:
    kube, rec = refusing_setup(api_error(500))
    with pytest.raises(ApiException):
        reconcile(rec)
    assert kube.objects[("TrainingJob", "llm")].get("status", {}).get("phase") != "Failed"
