"""JSON merge patches: the status write sends only what changed, and nulls what went away."""

from __future__ import annotations

import pytest

from carina.operators.runtime.kube import merge_patch

CASES = [
    ("no change", {"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, None),
    ("changed scalar", {"a": 1}, {"a": 2}, {"a": 2}),
    ("added key", {"a": 1}, {"a": 1, "b": 3}, {"b": 3}),
    ("removed key becomes null", {"a": 1, "startTime": "t"}, {"a": 1}, {"startTime": None}),
    (
        "nested change only",
        {"w": {"ready": 1, "total": 2}},
        {"w": {"ready": 2, "total": 2}},
        {"w": {"ready": 2}},
    ),
    ("lists are replaced whole", {"c": [1, 2]}, {"c": [1, 3]}, {"c": [1, 3]}),
    ("from nothing", {}, {"phase": "Running"}, {"phase": "Running"}),
]


@pytest.mark.parametrize(("old", "new", "patch"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_merge_patch(old, new, patch):
    assert merge_patch(old, new) == patch


def apply_patch(target, patch):
    """RFC 7386 apply, to check the round trip."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_patch(out.get(k), v)
    return out


@pytest.mark.parametrize(("old", "new"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_patch_applied_to_old_gives_new(old, new):
    assert apply_patch(old, merge_patch(old, new) or {}) == new


def test_a_kind_the_cluster_does_not_know_lists_as_none() -> None:
    """An operator installed without the queue CRDs admits as before, without an error loop."""
    import asyncio

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from carina.operators.runtime.kube import Kube

    kube = Kube(client.ApiClient())

    def missing(*_args: object, **_kwargs: object) -> None:
        raise ApiException(status=404, reason="Not Found")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ApiException(status=500, reason="Internal Server Error")

    kube.custom.list_cluster_custom_object = missing  # type: ignore[method-assign]
    assert asyncio.run(kube.list_custom("clusterqueues")) == []
    kube.custom.list_cluster_custom_object = broken  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        asyncio.run(kube.list_custom("clusterqueues"))


def test_a_manifest_goes_out_as_the_same_json_the_stock_client_sends() -> None:
    """The operator's client skips the model walk for dict bodies; the wire bytes stay equal."""
    import asyncio
    import json
    from types import SimpleNamespace

    from kubernetes import client

    from carina.operators.runtime.kube import Kube, _JsonApiClient

    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "llm-worker-0", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "w", "env": [{"name": "X", "value": "1"}]}]},
        "x": [1, 2.5, None, True],
    }
    sent: dict[str, tuple[str, str, str, dict[str, str]]] = {}
    for name, api in (
        ("stock", client.ApiClient(client.Configuration())),
        ("operator", _JsonApiClient(client.Configuration())),
    ):

        def request(method: str, url: str, *, name: str = name, **kw: object) -> object:
            headers = dict(kw["headers"])  # type: ignore[call-overload]
            sent[name] = (method, url, json.dumps(kw["body"]), headers)
            return SimpleNamespace(status=201, data=b"{}", getheaders=dict)

        api.rest_client.request = request
        asyncio.run(Kube(api).create(json.loads(json.dumps(manifest))))
    assert sent["operator"] == sent["stock"]
    assert sent["operator"][:2] == ("POST", "/api/v1/namespaces/ns/pods")
    assert json.loads(sent["operator"][2]) == manifest
