"""The admission writer's inputs and its idle cost: queues from watch events, the Lease renewed
without reads, and nothing written while nothing changes."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from builders import make_job

from carina.operators.runtime.cache import Cache, Key
from carina.operators.runtime.kube import Conflict, Kube
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.admission import LEASE_NAME, AdmissionWriter, Lease

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cluster_queue(name="team-a", uid="c1", rv="10", gpus: Any = 8) -> dict[str, Any]:
    return {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "ClusterQueue",
        "metadata": {"name": name, "uid": uid, "resourceVersion": rv},
        "spec": {"resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}]},
    }


def local_queue(ns="team-a", cq="team-a", rv="10") -> dict[str, Any]:
    return {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "LocalQueue",
        "metadata": {"name": "default", "namespace": ns, "uid": "l1", "resourceVersion": rv},
        "spec": {"clusterQueue": cq},
    }


def namespace(name="team-a", rv="3", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "uid": "n1", "resourceVersion": rv, "labels": labels}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


# -- the cache ---------------------------------------------------------------------------------


def test_an_older_queue_event_does_not_replace_a_newer_one() -> None:
    c = Cache()
    assert c.put_queueing("clusterqueues", cluster_queue(rv="20", gpus=16))
    assert not c.put_queueing("clusterqueues", cluster_queue(rv="15", gpus=8))
    assert c.cluster_queues["team-a"].spec.resources[0].nominal_quota == 16


def test_deleted_queues_go_and_a_late_delete_spares_the_recreated_one() -> None:
    c = Cache()
    c.put_queueing("clusterqueues", cluster_queue(uid="old", rv="10"))
    c.put_queueing("clusterqueues", cluster_queue(uid="new", rv="30"))
    c.drop_queueing("clusterqueues", cluster_queue(uid="old", rv="20"))
    assert c.cluster_queues["team-a"].metadata.uid == "new"
    c.drop_queueing("clusterqueues", cluster_queue(uid="new", rv="31"))
    assert c.cluster_queues == {}
    c.put_queueing("localqueues", local_queue())
    assert ("team-a", "default") in c.local_queues
    c.drop_queueing("localqueues", local_queue(rv="11"))
    assert c.local_queues == {}


def test_an_invalid_queue_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    c = Cache()
    c.put_queueing("clusterqueues", cluster_queue(rv="10"))
    with caplog.at_level(logging.WARNING):
        c.put_queueing("clusterqueues", cluster_queue(rv="11", gpus="lots"))
    assert "team-a" not in c.cluster_queues
    assert "invalid and ignored" in caplog.text
    # ... until a valid version of it arrives; an older valid one does not come back.
    assert not c.put_queueing("clusterqueues", cluster_queue(rv="10"))
    assert "team-a" not in c.cluster_queues
    c.put_queueing("clusterqueues", cluster_queue(rv="12", gpus=4))
    assert c.cluster_queues["team-a"].spec.resources[0].nominal_quota == 4


def test_namespaces_keep_their_labels_and_priority_classes_their_value() -> None:
    c = Cache()
    c.put_queueing("namespaces", namespace(team="a"))
    c.put_queueing("namespaces", namespace(rv="2", team="stale"))
    assert c.namespace_labels == {"team-a": {"team": "a"}}
    c.put_queueing(
        "trainingpriorityclasses",
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "TrainingPriorityClass",
            "metadata": {"name": "urgent", "uid": "p1", "resourceVersion": "4"},
            "value": 1000,
        },
    )
    assert c.priority_classes["urgent"].value == 1000
    c.drop_queueing("namespaces", namespace(rv="5"))
    assert c.namespace_labels == {}


# -- the Lease ---------------------------------------------------------------------------------


class FakeKube:
    """The API calls the admission writer makes, recorded; the lease kept in memory."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lease: dict[str, Any] | None = None
        self.version = 0

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert name == LEASE_NAME
        self.calls.append("get lease")
        return self.lease

    async def write_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("write lease")
        have = self.lease["metadata"]["resourceVersion"] if self.lease else None
        if lease["metadata"].get("resourceVersion") != have:
            raise Conflict("lease changed")
        self.version += 1
        self.lease = {
            **lease,
            "metadata": {**lease["metadata"], "resourceVersion": str(self.version)},
        }
        return self.lease

    async def patch_cluster_status(
        self, plural: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(f"patch {plural}/{name}")
        return {"status": patch}

    async def patch_job_status(self, *args: Any) -> dict[str, Any]:
        self.calls.append("patch job")
        raise AssertionError("no job to write")


def lease_of(fake: FakeKube, identity: str) -> Lease:
    return Lease(cast(Kube, fake), "ns", identity, seconds=15)


def test_the_holder_renews_a_third_of_the_way_through_without_reading() -> None:
    fake = FakeKube()
    mine = lease_of(fake, "a")
    assert asyncio.run(mine.hold(T0))
    assert fake.calls == ["get lease", "write lease"]
    fake.calls.clear()
    for seconds in (1, 2, 4.9):
        assert asyncio.run(mine.hold(T0 + timedelta(seconds=seconds)))
    assert fake.calls == []
    assert asyncio.run(mine.hold(T0 + timedelta(seconds=5)))
    assert fake.calls == ["write lease"]
    assert fake.lease is not None
    assert fake.lease["spec"]["acquireTime"] == T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_another_replica_reads_each_round_and_takes_an_expired_lease() -> None:
    fake = FakeKube()
    holder, other = lease_of(fake, "a"), lease_of(fake, "b")
    assert asyncio.run(holder.hold(T0))
    fake.calls.clear()
    for seconds in (1, 2, 14):
        assert not asyncio.run(other.hold(T0 + timedelta(seconds=seconds)))
    assert fake.calls == ["get lease"] * 3
    # The holder stopped renewing: the whole duration later, the other takes it over ...
    assert asyncio.run(other.hold(T0 + timedelta(seconds=15)))
    assert fake.lease is not None
    assert fake.lease["spec"]["holderIdentity"] == "b"
    # ... and the old holder's next renewal finds it changed: it no longer holds it.
    fake.calls.clear()
    assert not asyncio.run(holder.hold(T0 + timedelta(seconds=16)))
    assert fake.calls == ["write lease"]
    assert not asyncio.run(holder.hold(T0 + timedelta(seconds=17)))
    assert fake.calls == ["write lease", "get lease"]


def test_a_conflict_on_taking_the_lease_means_another_holds_it() -> None:
    fake = FakeKube()
    mine = lease_of(fake, "a")
    fake.lease = {"metadata": {"resourceVersion": "7"}, "spec": {}}
    original = fake.read_lease

    async def stale(namespace: str, name: str) -> dict[str, Any] | None:
        await original(namespace, name)
        return {"metadata": {"resourceVersion": "6"}, "spec": {}}

    fake.read_lease = stale  # type: ignore[method-assign]
    assert not asyncio.run(mine.hold(T0))
    fake.read_lease = original  # type: ignore[method-assign]
    assert asyncio.run(mine.hold(T0 + timedelta(seconds=1)))


# -- an idle round -----------------------------------------------------------------------------


def writer(fake: FakeKube, cache: Cache) -> AdmissionWriter:
    settings = Settings(lease_namespace="ns")
    return AdmissionWriter(settings, cast(Kube, fake), cache, WorkQueue[Key](), clock=lambda: T0)


def test_no_queue_and_no_queued_job_costs_no_request() -> None:
    fake, cache = FakeKube(), Cache()
    admission = writer(fake, cache)
    for _ in range(3):
        asyncio.run(admission.once())
    assert fake.calls == []


def test_a_queue_s_usage_is_written_once_until_it_changes() -> None:
    fake, cache = FakeKube(), Cache()
    cache.put_queueing("clusterqueues", cluster_queue())
    admission = writer(fake, cache)
    for _ in range(3):
        asyncio.run(admission.once())
    assert fake.calls == ["patch clusterqueues/team-a"]
    # The queue deleted and made again: its new object gets its usage.
    cache.drop_queueing("clusterqueues", cluster_queue(rv="11"))
    cache.put_queueing("clusterqueues", cluster_queue(uid="c2", rv="12"))
    asyncio.run(admission.once())
    asyncio.run(admission.once())
    assert fake.calls == ["patch clusterqueues/team-a"] * 2


def queued_job(rv: str, queue: str | None = "default", **spec: Any) -> dict[str, Any]:
    body = dict(make_job("llm").with_spec(**spec, **({"queue": queue} if queue else {})))
    body["metadata"].update(
        namespace="team-a", uid="j1", resourceVersion=rv, creationTimestamp="2026-01-01T00:00:00Z"
    )
    return body


def test_a_queued_job_is_decided_again_once_its_version_changes() -> None:
    fake, cache = FakeKube(), Cache()
    written: list[dict[str, Any]] = []

    async def patch_job_status(_ns: str, _name: str, rv: str, patch: dict[str, Any]) -> Any:
        written.append(patch)
        return queued_job(str(int(rv) + 1), suspend=False) | {"status": patch}

    fake.patch_job_status = patch_job_status  # type: ignore[method-assign]
    cache.put_queueing("clusterqueues", cluster_queue())
    cache.put_queueing("localqueues", local_queue())
    # No queue named: admission leaves it alone, however often it looks.
    cache.put_job(queued_job("1", queue=None))
    admission = writer(fake, cache)
    asyncio.run(admission.once())
    assert written == []
    # Now queued but suspended: nothing to decide, round after round ...
    cache.put_job(queued_job("2", suspend=True))
    asyncio.run(admission.once())
    asyncio.run(admission.once())
    assert written == []
    # ... until a new version resumes it: the next round admits it from the new spec.
    cache.put_job(queued_job("3", suspend=False))
    asyncio.run(admission.once())
    assert len(written) == 1
    assert written[0]["queueing"]["admission"]["clusterQueue"] == "team-a"


def test_a_lease_deleted_since_it_was_read_is_a_conflict_on_renewal() -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kube = Kube(client.ApiClient())

    def missing(*_args: object, **_kwargs: object) -> None:
        raise ApiException(status=404, reason="Not Found")

    kube.coordination.replace_namespaced_lease = missing  # type: ignore[method-assign]
    kube.coordination.create_namespaced_lease = missing  # type: ignore[method-assign]
    meta = {"name": LEASE_NAME, "namespace": "ns"}
    with pytest.raises(Conflict):
        asyncio.run(kube.write_lease("ns", {"metadata": {**meta, "resourceVersion": "3"}}))
    # Creating it in a namespace that is not there is no contest: it stays an error.
    with pytest.raises(ApiException):
        asyncio.run(kube.write_lease("ns", {"metadata": meta}))
