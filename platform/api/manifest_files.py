"""Reading manifest files a person hands the CLI, whatever is in them.

A manifest is a small UTF-8 YAML file. The reader refuses, with a ManifestError naming the
file, anything that is not: more than MAX_FILE_BYTES (read with a bounded read, so
/dev/zero stops), bytes that are not UTF-8, no document at all, YAML nested deeper than
MAX_DEPTH, documents whose aliases expand to more than MAX_NODES nodes (a 1 KB "billion
laughs" would otherwise pass `carina validate` and expand to hundreds of MB on submit), and
integers beyond 64 bits. `carina validate`, `submit` and `run` all read through here.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from carina.platform.api import queues
from carina.platform.api.manifests import FieldError, ManifestError, field_errors, parse_manifest
from carina.platform.api.types import TrainingJob

MAX_FILE_BYTES = 1 << 20  # the API server's default request body limit (max_body_bytes)
MAX_DEPTH = 100  # a pod template is about 10 levels deep
MAX_NODES = 100_000  # every node an alias stands for counts, as it would once serialized
MAX_INT_CHARS = 32  # 2**63 has 19 digits; longer scalars are refused before conversion
INT_LIMIT = 1 << 63


def read_manifest_text(path: Path) -> str:
    """The file's text: at most MAX_FILE_BYTES of UTF-8 (a UTF-8 byte order mark is fine)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _file_error(path, exc.strerror or str(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise _file_error(path, f"larger than {MAX_FILE_BYTES >> 20} MiB: not a manifest")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _file_error(path, "UTF-16 text: save the manifest as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(
            path,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}):"
            " save the manifest as UTF-8",
        ) from None


def load_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """Each YAML document of a file, with a label naming the file and document index."""
    text = read_manifest_text(path)
    try:
        docs = [d for d in yaml.load_all(text, Loader=BoundedLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(str(path), [FieldError("(yaml)", str(exc))]) from None
    if not docs:
        what = "the file is empty" if not text.strip() else "the file has no YAML document"
        raise _file_error(path, f"no manifest: {what}")
    for index, doc in enumerate(docs):
        yield (str(path) if len(docs) == 1 else f"{path}#{index}"), doc


def load_jobs(path: Path) -> list[TrainingJob]:
    """Every TrainingJob in a YAML file; raises ManifestError on the first bad one."""
    return [parse_manifest(doc, label) for label, doc in load_documents(path)]


CarinaObject = TrainingJob | queues.ClusterQueue | queues.LocalQueue | queues.TrainingPriorityClass


def parse_object(manifest: Any, source: str = "<manifest>") -> CarinaObject:
    """One manifest of any Carina kind (`carina validate`); raises ManifestError.

    A ClusterQueue, LocalQueue or TrainingPriorityClass by its `kind`; anything else is read
    as a TrainingJob, whose errors then say what is wrong (a wrong `kind` among them).
    """
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    model = queues.KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return parse_manifest(manifest, source)
    try:
        parsed: CarinaObject = model.model_validate(manifest)
    except ValidationError as exc:
        raise ManifestError(source, field_errors(exc)) from None
    return parsed


def _file_error(path: Path, rule: str) -> ManifestError:
    return ManifestError(str(path), [FieldError("(file)", rule)])


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts as it composes: nesting depth, expanded nodes, integer size."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # of the node being composed
        self._deepest = 0  # deepest level reached, aliases expanded, in the current subtree
        self._nodes = 0  # nodes composed in the file so far, each alias as its whole subtree
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height)

    def compose_document(self) -> Any:
        node = super().compose_document()
        self._anchored = {}
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        depth = self._depth + 1
        # types-PyYAML leaves Parser.peek_event unannotated; it returns the next yaml.Event.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors and event.anchor not in self._anchored:
                raise _refused(f"alias *{event.anchor} refers to itself", event)
            nodes, height = self._anchored.get(str(event.anchor), (0, 0))
            self._count(nodes, depth + height - 1, event)
            return super().compose_node(parent, index)
        before, outer_deepest = self._nodes, self._deepest
        self._deepest = 0
        self._count(1, depth, event)
        self._depth = depth
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth = depth - 1
        if event.anchor is not None:
            self._anchored[str(event.anchor)] = (self._nodes - before, self._deepest - depth + 1)
        self._deepest = max(outer_deepest, self._deepest)
        return node

    def _count(self, nodes: int, depth: int, event: yaml.Event) -> None:
        self._nodes += nodes
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise _refused(f"nested deeper than {MAX_DEPTH} levels", event)
        if self._nodes > MAX_NODES:
            raise _refused(f"more than {MAX_NODES:,} YAML nodes once aliases are expanded", event)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(str(node.value)) > MAX_INT_CHARS:
            raise ConstructorError(
                None, None, "integer too large (more than 64 bits)", node.start_mark
            )
        value: int = super().construct_yaml_int(node)
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise ConstructorError(
                None, None, "integer too large (more than 64 bits)", node.start_mark
            )
        return value


def _refused(problem: str, event: yaml.Event) -> ComposerError:
    mark: Any = event.start_mark  # the stubs type it as either of PyYAML's two Mark classes
    return ComposerError(None, None, problem, mark)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
