"""What the operator asks kopf for: only worker pods from the API server, no stored diffs."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from carina.operators.runtime.settings import Settings
from carina.operators.trainingjob.handlers import configure
from carina.platform.planning.observed import JOB_LABEL


def test_only_the_pod_watch_is_narrowed_to_worker_pods_by_the_api_server() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Settings())
    selectors = settings.watching.label_selectors
    pods = Resource("", "v1", "pods", kind="Pod", namespaced=True)
    assert list(selectors.collect(pods)) == [JOB_LABEL]
    for other in (
        Resource("", "v1", "nodes", kind="Node"),
        Resource("", "v1", "namespaces", kind="Namespace"),
        Resource("carina.dev", "v1alpha1", "trainingjobs", kind="TrainingJob", namespaced=True),
        Resource("carina.dev", "v1alpha1", "clusterqueues", kind="ClusterQueue"),
    ):
        assert list(selectors.collect(other)) == [], other.plural


def test_no_diff_is_built_or_stored_for_any_object() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Settings())
    body = kopf.Body({"metadata": {"name": "x", "annotations": {}}, "spec": {"a": 1}})
    storage = settings.persistence.diffbase_storage
    assert storage.build(body=body) is None
    assert storage.fetch(body=body) is None
