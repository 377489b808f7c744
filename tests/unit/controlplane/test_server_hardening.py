"""Bad input a hostile client sends: each gets a 4xx naming the field, or a clear startup error.

Manifest rules (quantities, strict scalars, control characters, labels) are in
builders.BAD_MANIFESTS, which test_server_routes.py sends through the API too; these are the
rules of the REST API and the embedded platform themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import make_job
from fastapi.testclient import TestClient
from server_support import ALICE, auth, make_settings

from carina.platform.controlplane.backends.embedded import (
    LocalBackend,
    TokenFileError,
    ensure_local_token,
)
from carina.platform.controlplane.main import MAX_BODY_DEPTH, create_app

JOBS = "/api/v1/namespaces/team-a/trainingjobs"


def create(client: TestClient, manifest: dict[str, Any]):
    return client.post(JOBS, json=manifest, headers=auth(ALICE))


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_metadata_nested_255_levels_deep_is_422_naming_the_field(client: TestClient) -> None:
    manifest = make_job("deep")
    manifest["metadata"]["extra"] = nested(255)
    resp = create(client, manifest)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert detail["reason"] == "Invalid"
    [error] = detail["errors"]
    assert error["path"].startswith("metadata.extra.a.a")
    assert error["rule"] == f"nested deeper than {MAX_BODY_DEPTH} levels"
    assert client.get(JOBS + "/deep", headers=auth(ALICE)).status_code == 404


def test_a_template_object_nested_too_deep_is_422_naming_the_field(client: TestClient) -> None:
    affinity = {"nodeAffinity": nested(MAX_BODY_DEPTH)}
    resp = create(client, make_job().with_spec(template={"spec": {"affinity": affinity}}))
    assert resp.status_code == 422
    assert resp.json()["detail"]["errors"][0]["path"].startswith(
        "spec.template.spec.affinity.nodeAffinity.a"
    )


def test_a_body_nested_beyond_any_parser_is_422_not_500(client: TestClient) -> None:
    body = b'{"metadata":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = client.post(
        JOBS, content=body, headers={**auth(ALICE), "content-type": "application/json"}
    )
    assert resp.status_code == 422


def test_a_job_as_deep_as_kubernetes_objects_go_is_accepted(client: TestClient) -> None:
    term = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }
    resp = create(client, make_job().with_spec(template={"spec": {"affinity": affinity}}))
    assert resp.status_code == 201, resp.text


def test_a_deletion_timestamp_on_create_is_dropped_as_kubernetes_does(
    client: TestClient,
) -> None:
    manifest = make_job("demo")
    manifest["metadata"].update(
        deletionTimestamp="2020-01-01T00:00:00Z",
        deletionGracePeriodSeconds=0,
        uid="chosen-by-me",
        resourceVersion="42",
        managedFields=[{"manager": "me"}],
    )
    resp = create(client, manifest)
    assert resp.status_code == 201, resp.text
    meta = client.get(JOBS + "/demo", headers=auth(ALICE)).json()["metadata"]
    for owned in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
        assert owned not in meta
    assert meta["uid"] != "chosen-by-me"
    assert meta["resourceVersion"] == "1"


def test_finalizers_are_refused_on_the_embedded_platform(client: TestClient) -> None:
    manifest = make_job("demo")
    manifest["metadata"]["finalizers"] = ["example.com/keep"]
    resp = create(client, manifest)
    assert resp.status_code == 422
    assert resp.json()["detail"]["errors"][0]["path"] == "metadata.finalizers"
    assert client.get(JOBS + "/demo", headers=auth(ALICE)).status_code == 404


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"resources": {"cpu": "abc"}}, "spec.resources.cpu"),
        ({"replicas": True}, "spec.replicas"),
        ({"checkpoint": {"uri": "s3://ckpts/run\x00x"}}, "spec.checkpoint.uri"),
    ],
)
def test_bad_input_from_the_issue_is_refused_and_nothing_is_stored(
    client: TestClient, spec: dict[str, Any], path: str
) -> None:
    resp = create(client, make_job("bad").with_spec(**spec))
    assert resp.status_code == 422
    assert [e["path"] for e in resp.json()["detail"]["errors"]] == [path]
    assert client.get(JOBS + "/bad", headers=auth(ALICE)).status_code == 404


def test_the_openapi_document_states_exactly_one_workload_and_quantities(
    client: TestClient,
) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    workload = schemas["Workload"]
    assert (workload["minProperties"], workload["maxProperties"]) == (1, 1)
    cpu = schemas["Resources"]["properties"]["cpu"]["anyOf"]
    assert {"type": "integer", "minimum": 1} in cpu
    assert any("pattern" in member for member in cpu)


# -- the tokens file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "where", "says"),
    [
        (
            {"name": "a", "token": "t", "namespaces": "default"},
            "tokens[0].namespaces",
            "not a string",
        ),
        ({"name": "a", "token": "t", "namespace": ["default"]}, "tokens[0].namespace", "unknown"),
        ({"name": "a", "namespaces": ["default"]}, "tokens[0]", "exactly one of token, sha256"),
        ({"name": "a", "token": 12345, "namespaces": ["x"]}, "tokens[0].token", "string"),
        ({"name": "a", "token": "t", "namespaces": ["Team A"]}, "tokens[0].namespaces[0]", ""),
    ],
)
def test_a_malformed_tokens_file_stops_the_server_starting_and_says_why(
    tmp_path: Path, entry: dict[str, Any], where: str, says: str
) -> None:
    settings = make_settings(tmp_path)
    tokens = settings.resolved_tokens_file()
    tokens.write_text(yaml.safe_dump({"tokens": [entry]}))
    with pytest.raises(TokenFileError) as info:
        create_app(settings, LocalBackend(settings))
    message = str(info.value)
    assert str(tokens) in message
    assert where in message
    assert says in message


@pytest.mark.parametrize("text", ["- just\n- a list\n", "tokens: [\n", "tokens: 5\n"])
def test_a_tokens_file_that_is_not_the_documented_shape_is_a_startup_error(
    tmp_path: Path, text: str
) -> None:
    settings = make_settings(tmp_path)
    settings.resolved_tokens_file().write_text(text)
    with pytest.raises(TokenFileError):
        LocalBackend(settings)


def test_ensure_local_token_refuses_to_extend_a_malformed_tokens_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": "t", "namespaces": "default"}]}))
    with pytest.raises(TokenFileError, match="namespaces"):
        ensure_local_token(tokens)
    assert not (tmp_path / "token").exists()


def test_ensure_local_token_keeps_the_other_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump({"tokens": [{"name": "a", "token": "t", "namespaces": ["x"]}]})
    )
    ensure_local_token(tokens)
    names = [e["name"] for e in yaml.safe_load(tokens.read_text())["tokens"]]
    assert names[0] == "a"
    assert len(names) == 2


def test_a_tokens_file_broken_while_serving_refuses_requests_until_fixed(
    client: TestClient, settings: Any
) -> None:
    tokens = settings.resolved_tokens_file()
    good = tokens.read_text()
    assert client.get(JOBS, headers=auth(ALICE)).status_code == 200
    tokens.write_text(json.dumps({"tokens": [{"token": ALICE, "namespaces": "team-a"}]}))
    broken = client.get(JOBS, headers=auth(ALICE))
    assert broken.status_code == 503
    assert "tokens file is invalid" in broken.json()["detail"]["message"]
    tokens.write_text(good + "\n")
    assert client.get(JOBS, headers=auth(ALICE)).status_code == 200
