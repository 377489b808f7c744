"""Reading TrainingJob manifests from files, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from carina.platform.api.types import TrainingJob
from carina.workloads.config import describe_errors


@dataclass(frozen=True)
class FieldError:
    """One broken rule: where (a dotted path into the manifest) and which rule."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class ManifestError(ValueError):
    """A manifest that cannot become a TrainingJob; `errors` name each field and rule."""

    def __init__(self, source: str, errors: list[FieldError]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(str(e) for e in errors))


def field_errors(error: ValidationError) -> list[FieldError]:
    """Pydantic's errors as field paths in the manifest's own (camelCase) names."""
    return [FieldError(path, rule) for path, rule in describe_errors(error.errors())]


def parse_manifest(manifest: Any, source: str = "<manifest>") -> TrainingJob:
    """Validate one manifest (a parsed YAML/JSON document); raises ManifestError."""
    if not isinstance(manifest, dict):
        raise ManifestError(source, [FieldError("(root)", "a manifest must be a mapping")])
    try:
        return TrainingJob.parse(manifest)
    except ValidationError as exc:
        raise ManifestError(source, field_errors(exc)) from None


def load_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """Each YAML document of a file, with a label naming the file and document index."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(str(path), [FieldError("(file)", exc.strerror or str(exc))]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(str(path), [FieldError("(yaml)", str(exc))]) from None
    for index, doc in enumerate(docs):
        yield (str(path) if len(docs) == 1 else f"{path}#{index}"), doc


def load_jobs(path: Path) -> list[TrainingJob]:
    """Every TrainingJob in a YAML file; raises ManifestError on the first bad one."""
    return [parse_manifest(doc, label) for label, doc in load_documents(path)]
