"""Manifest files a hostile or careless user hands the CLI: refused with a reason, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builders import make_job

from carina.platform.api.manifest_files import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    load_documents,
    load_jobs,
)
from carina.platform.api.manifests import ManifestError


def refusal(path: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        list(load_documents(path))
    assert caught.value.source == str(path)
    return str(caught.value)


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_a_good_manifest_reads_as_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(make_job("good")))))
    assert [job.metadata.name for job in load_jobs(path)] == ["good"]


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert list(load_documents(path)) == [(str(path), {"a": 1})]


def test_a_huge_file_is_refused_after_a_bounded_read() -> None:
    assert "larger than 1 MiB" in refusal(Path("/dev/zero"))


def test_a_file_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * MAX_FILE_BYTES)
    assert "larger than 1 MiB" in refusal(path)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("kind: TrainingJob\n".encode("utf-16"), "UTF-16"),
        ("name: café\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9)"),
        (bytes(range(256)), "not UTF-8 text"),
    ],
    ids=["utf-16", "latin-1", "binary"],
)
def test_text_that_is_not_utf8_is_refused_by_name(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_bytes(data)
    assert says in refusal(path)


def test_control_characters_are_a_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"a: \x00\x01\n")
    assert "(yaml)" in refusal(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "no manifest: the file is empty"), ("# only a comment\n---\n", "no YAML document")],
    ids=["empty", "comments-only"],
)
def test_a_file_without_a_document_is_an_error(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert says in refusal(path)


def test_a_billion_laughs_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    assert path.stat().st_size < 1024
    assert f"more than {MAX_NODES:,} YAML nodes" in refusal(path)


def test_a_few_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("base: &base {x: 1}\nother:\n  <<: *base\n  y: 2\nagain: *base\n")
    [(_, doc)] = load_documents(path)
    assert doc["other"] == {"x": 1, "y": 2}
    assert doc["again"] == {"x": 1}


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [*a]\n")
    assert "refers to itself" in refusal(path)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "\n".join(f"{' ' * 2 * i}k{i}:" for i in range(MAX_DEPTH + 5)) + " 1\n",
        "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 300)),
    ],
    ids=["flow", "block", "through-aliases"],
)
def test_deep_nesting_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    assert f"nested deeper than {MAX_DEPTH} levels" in refusal(path)


@pytest.mark.parametrize(
    "value", ["9" * 5000, "9223372036854775808", "-9223372036854775809", "0x" + "f" * 40]
)
def test_integers_beyond_64_bits_are_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "int.yaml"
    path.write_text(f"replicas: {value}\n")
    assert "integer too large (more than 64 bits)" in refusal(path)


def test_integers_within_64_bits_read_as_yaml_says(tmp_path: Path) -> None:
    path = tmp_path / "ints.yaml"
    path.write_text("a: 9223372036854775807\nb: -9223372036854775808\nc: 0x10\nd: 1_000\n")
    [(_, doc)] = load_documents(path)
    assert doc == {"a": 2**63 - 1, "b": -(2**63), "c": 16, "d": 1000}
