"""A full disk through the REST API: 503 StorageFull in the API's error shape, and not ready."""

from __future__ import annotations

import pytest
from builders import make_job
from fastapi.testclient import TestClient
from server_support import ALICE, auth

from carina.platform.embedded.store import StorageFull, Store

JOBS = "/api/v1/namespaces/team-a/trainingjobs"


def no_room(*_: object, **__: object) -> None:
    raise StorageFull("database or disk is full (writing carina.db)")


@pytest.mark.parametrize(
    ("method", "path", "store_method"),
    [
        ("POST", JOBS, "create_job"),
        ("DELETE", f"{JOBS}/demo", "mark_deleting"),
        ("POST", f"{JOBS}/demo/suspend", "update_spec"),
    ],
)
def test_a_write_on_a_full_disk_is_a_503_saying_storage_full(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, method: str, path: str, store_method: str
) -> None:
    assert client.post(JOBS, json=make_job("demo"), headers=auth(ALICE)).status_code == 201
    monkeypatch.setattr(Store, store_method, no_room)
    kwargs = {"json": make_job("other")} if store_method == "create_job" else {}
    resp = client.request(method, path, headers=auth(ALICE), **kwargs)
    assert resp.status_code == 503
    detail = resp.json()["detail"]
    assert detail["reason"] == "StorageFull"
    assert "no room to write" in detail["message"]
    assert detail["errors"] == []
    assert client.get(f"{JOBS}/demo", headers=auth(ALICE)).status_code == 200  # reads go on


def test_readyz_says_storage_full_until_the_disk_has_room(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "check_writable", no_room)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["detail"]["reason"] == "StorageFull"
    monkeypatch.undo()
    assert client.get("/readyz").status_code == 200
