"""The operator's cache: older events never replace newer objects; deleted pods stay deleted."""

from __future__ import annotations

from carina.operators.runtime.cache import Cache


def pod(name="llm-worker-0", uid="p1", rv="10", restart="0", phase="Running", ns="ns"):
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "resourceVersion": rv,
            "labels": {
                "carina.dev/job": "llm",
                "carina.dev/index": name[-1],
                "carina.dev/restart": restart,
            },
        },
        "status": {"phase": phase, "podIP": "10.0.0.1"},
    }


def job(uid="j1", rv="5", phase=None):
    body = {"metadata": {"name": "llm", "namespace": "ns", "uid": uid, "resourceVersion": rv}}
    if phase:
        body["status"] = {"phase": phase}
    return body


def test_older_pod_event_does_not_replace_a_newer_one():
    c = Cache()
    c.put_pod(pod(rv="20", phase="Failed"))
    c.put_pod(pod(rv="15", phase="Running"))
    [rec] = c.records(("ns", "llm"))
    assert rec.worker.phase == "Failed"
    assert rec.ip == "10.0.0.1"


def test_deleted_pod_is_not_resurrected_by_a_late_event():
    c = Cache()
    c.put_pod(pod(rv="10"))
    c.drop_pod(pod(rv="12"))
    c.put_pod(pod(rv="11"))
    [rec] = c.records(("ns", "llm"))
    assert rec.worker.deleting  # only its last state, as a tombstone


def test_a_pod_deleted_by_a_node_failure_leaves_its_last_state_until_the_restart():
    c = Cache()
    c.put_pod(pod(rv="10"))
    final = pod(rv="12")
    final["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    final["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
    ]
    c.drop_pod(final)
    [rec] = c.records(("ns", "llm"))
    assert rec.worker.deleting
    assert rec.worker.reason == "NodeLost"
    c.prune(("ns", "llm"), generation=0)
    assert len(c.records(("ns", "llm"))) == 1
    c.prune(("ns", "llm"), generation=1)
    assert c.records(("ns", "llm")) == []


def test_pods_the_operator_deletes_leave_no_tombstone():
    c = Cache()
    c.put_pod(pod(rv="10"))
    c.deleting_ourselves("p1")
    c.drop_pod(pod(rv="12"))
    assert c.records(("ns", "llm")) == []


def test_a_new_pod_of_the_same_name_replaces_the_old_one():
    c = Cache()
    c.put_pod(pod(uid="p1", rv="30"))
    c.put_pod(pod(uid="p2", rv="40", restart="1"))
    c.drop_pod(pod(uid="p1", rv="35"))  # the old one's DELETED arrives late
    [rec] = c.records(("ns", "llm"))
    assert (rec.uid, rec.worker.restart) == ("p2", 1)


def test_job_status_written_by_us_is_not_undone_by_an_older_watch_event():
    c = Cache()
    c.put_job(job(rv="7", phase="Restarting"))
    c.put_job(job(rv="6", phase="Running"))
    assert c.jobs[("ns", "llm")]["status"]["phase"] == "Restarting"


def test_a_recreated_job_replaces_the_old_one_whatever_its_version():
    c = Cache()
    c.put_job(job(uid="j1", rv="100"))
    c.drop_job(job(uid="j0"))  # an older incarnation: ignored
    c.put_job(job(uid="j2", rv="90"))
    assert c.jobs[("ns", "llm")]["metadata"]["uid"] == "j2"


def test_a_job_is_kept_without_its_managed_fields_and_the_event_is_left_alone():
    body = job(rv="7")
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    cache = Cache()
    key = cache.put_job(body)
    assert "managedFields" not in cache.jobs[key]["metadata"]
    assert cache.jobs[key]["metadata"]["resourceVersion"] == "7"  # what writes are guarded by
    assert "managedFields" in body["metadata"]  # the watch's own object is not changed


def test_the_queued_jobs_follow_the_newest_spec_and_deletion():
    c = Cache()
    c.put_job(job(rv="5"))
    assert c.queued == set()
    queued = job(rv="6") | {"spec": {"queue": "default"}}
    c.put_job(queued)
    assert c.queued == {("ns", "llm")}
    c.put_job(job(rv="4"))  # an older event without the queue changes nothing
    assert c.queued == {("ns", "llm")}
    c.drop_job(job(uid="j0"))  # another incarnation's delete: still there
    assert c.queued == {("ns", "llm")}
    c.drop_job(queued)
    assert c.queued == set()
    c.put_job(queued)
    c.put_job(job(rv="7"))  # the queue taken out of the spec
    assert c.queued == set()
