"""`carina` as a user runs it: exit codes and messages, never tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builders import BAD_MANIFESTS, BAD_QUEUE_MANIFESTS, make_job
from typer.testing import CliRunner

from carina.platform.api import crd
from carina.platform.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def write(tmp_path: Path, name: str, *docs: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all([json.loads(json.dumps(d)) for d in docs]))
    return path


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("carina 0.")


def test_crds_prints_every_generated_crd() -> None:
    result = runner.invoke(app, ["crds"])
    assert result.exit_code == 0
    assert result.stdout == crd.all_crds_yaml()
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["TrainingJob", "ClusterQueue", "LocalQueue", "TrainingPriorityClass"]


def test_crds_writes_one_file_per_kind_into_a_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["crds", "--output", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / crd.CRD_FILENAME).read_text() == crd.crd_yaml()
    for kind in crd.KINDS:
        assert (tmp_path / kind.filename).read_text() == crd.crd_yaml(kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crd.CRD_FILENAMES)


def test_every_example_manifest_validates() -> None:
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml")) + sorted(
        str(p) for p in (ROOT / "examples" / "queues").glob("*.yaml")
    )
    assert examples
    result = runner.invoke(app, ["validate", *examples])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": ok") >= len(examples)


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_validate_names_field_and_rule_without_traceback(tmp_path: Path, case: str) -> None:
    manifest, path = BAD_MANIFESTS[case]
    result = runner.invoke(app, ["validate", str(write(tmp_path, "bad.yaml", manifest))])
    assert result.exit_code == 1
    assert path in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", sorted(BAD_QUEUE_MANIFESTS))
def test_validate_refuses_bad_queueing_objects_naming_field_and_rule(
    tmp_path: Path, case: str
) -> None:
    manifest, path, words = BAD_QUEUE_MANIFESTS[case]
    result = runner.invoke(app, ["validate", str(write(tmp_path, "bad.yaml", manifest))])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert f"{path}:" in said
    assert words in said
    assert "Traceback" not in result.output


def test_validate_says_what_each_queueing_object_is() -> None:
    result = runner.invoke(
        app, ["validate", *sorted(str(p) for p in (ROOT / "examples" / "queues").glob("*.yaml"))]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "ok (ClusterQueue team-a: cohort research; nvidia.com/gpu 16" in said
    assert "ok (LocalQueue team-b/training -> ClusterQueue team-b)" in said
    assert "ok (TrainingPriorityClass production: 1000)" in said


def test_validate_checks_every_document_and_every_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", make_job("a"), make_job("b"))
    bad = write(tmp_path, "bad.yaml", make_job().with_replicas(0))
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert "good.yaml#0: ok" in result.stdout
    assert "good.yaml#1: ok" in result.stdout
    assert "spec.replicas" in result.stderr


def test_validate_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.yaml"), str(broken)])
    assert result.exit_code == 1
    assert "missing.yaml" in result.stderr
    assert "(yaml)" in result.stderr
    assert "Traceback" not in result.output


def test_logs_refuses_a_negative_restart_before_calling_any_server() -> None:
    result = runner.invoke(
        app, ["logs", "llm", "--restart", "-1", "--server", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert "--restart" in result.output
    assert "Traceback" not in result.output


HOSTILE_FILES = {
    "binary": bytes(range(256)),
    "utf-16": "apiVersion: carina.dev/v1alpha1\n".encode("utf-16"),
    "latin-1": "metadata: {name: café}\n".encode("latin-1"),
    "empty": b"",
    "deep": b"[" * 20000 + b"]" * 20000,
    "huge-integer": b"spec: {replicas: " + b"9" * 5000 + b"}\n",
    "billion-laughs": (
        "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    ).encode(),
}


@pytest.mark.parametrize("command", ["validate", "submit"])
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_manifest_files_are_refused_with_a_reason(
    tmp_path: Path, command: str, case: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(HOSTILE_FILES[case])
    server = ["--server", "http://127.0.0.1:9"] if command == "submit" else []
    result = runner.invoke(app, [command, str(path), *server])
    assert result.exit_code == 1, result.output
    assert f"{path}: invalid" in result.stderr
    assert isinstance(result.exception, SystemExit)  # an exit code, not a crash
    assert "Traceback" not in result.output
    assert "no Carina control plane" not in result.output  # refused before any request


def test_validate_says_an_empty_file_holds_no_manifest(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "no manifest" in result.stderr


def test_validate_stops_reading_an_endless_file() -> None:
    result = runner.invoke(app, ["validate", "/dev/zero"])
    assert result.exit_code == 1
    assert "larger than 1 MiB" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["delete", "x/../victim"],
        ["get", ""],
        ["get", "Upper"],
        ["get", "a" * 51],
        ["suspend", "job?x=1"],
        ["logs", "job#frag"],
        ["get", "job", "--namespace", "team/../other"],
        ["list", "--namespace", ""],
    ],
    ids=["dot-dot", "empty", "upper", "too-long", "query", "fragment", "namespace", "no-ns"],
)
def test_names_and_namespaces_are_checked_before_any_request(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--server", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.replace("│", " ").split())  # unwrap the error box
    assert "lowercase letters, digits and '-'" in said
    assert "no Carina control plane" not in result.output
    assert "Traceback" not in result.output


def test_the_client_sends_a_name_as_one_quoted_path_segment() -> None:
    import httpx

    from carina.platform.cli.client import CarinaClient, jobs_path

    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(404, json={"detail": {"reason": "NotFound", "message": "no"}})

    client = CarinaClient("http://carina.test")
    client.http = httpx.Client(base_url="http://carina.test", transport=httpx.MockTransport(answer))
    with pytest.raises(Exception, match="404"):
        client.delete("default", "x/../victim")
    assert seen == [b"/api/v1/namespaces/default/trainingjobs/x%2F..%2Fvictim"]
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError, match="is not a name"):
            jobs_path("default", bad)
