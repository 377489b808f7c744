#!/usr/bin/env python3
"""Write helm/carina/README.md from README.md.gotmpl and the `# --` comments of values.yaml.

    scripts/helm-readme.py          # rewrite the README
    scripts/helm-readme.py --check  # exit 1 if the README is stale or a key is undocumented

The comment convention is helm-docs' (KubeRay's chart uses it): a `# -- text` line documents
the key right below it, and following `#` lines continue the text. A documented key whose value
is a mapping is one row of the table (its children are its default); an undocumented mapping is
walked into; an undocumented key with any other value is an error. The template's
`{{ template "chart.valuesTable" . }}` is replaced by the table, so helm-docs could take over.
Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "carina"
MARKER = '{{ template "chart.valuesTable" . }}'

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+|\"[^\"]+\"):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^ *# ?(?P<text>.*)$")


@dataclass(frozen=True)
class Row:
    """One documented key: dotted path, YAML type, default and description."""

    key: str
    type: str
    default: Any
    description: str


def _lookup(values: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def documented_keys(text: str) -> dict[tuple[str, ...], str]:
    """Paths of the keys that carry a `# --` comment, with its text (in file order)."""
    values = yaml.safe_load(text) or {}
    docs: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        if (doc := _DOC.match(line)) is not None:
            pending = [doc.group("text").strip()]
            continue
        if pending is not None and (more := _MORE.match(line)) is not None:
            pending.append(more.group("text").strip())
            continue
        key = _KEY.match(line)
        if key is None:
            if line.strip():
                pending = None
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*[k for _, k in stack], key.group("key").strip('"'))
        found, _ = _lookup(values, path)
        if not found:  # a key inside a list item, or inside a block scalar
            pending = None
            continue
        stack.append((indent, path[-1]))
        if pending is not None:
            docs[path] = " ".join(p for p in pending if p)
        pending = None
    return docs


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def rows(text: str) -> tuple[list[Row], list[str]]:
    """The table's rows, and the paths of keys that have no `# --` comment."""
    values = yaml.safe_load(text) or {}
    docs = documented_keys(text)
    out: list[Row] = []
    missing: list[str] = []

    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            if path in docs:
                out.append(Row(".".join(path), _type(value), value, docs[path]))
            elif isinstance(value, dict) and value:
                walk(value, path)
            else:
                missing.append(".".join(path))

    walk(values, ())
    return out, missing


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def values_table(text: str) -> str:
    """The Markdown table of every documented key."""
    table, _ = rows(text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in table:
        default = json.dumps(row.default, separators=(",", ":"))
        lines.append(f"| {row.key} | {row.type} | `{_cell(default)}` | {_cell(row.description)} |")
    return "\n".join(lines)


def render(chart: Path = CHART) -> str:
    """The README text for a chart folder."""
    template = (chart / "README.md.gotmpl").read_text()
    if MARKER not in template:
        raise SystemExit(f"{chart / 'README.md.gotmpl'} lacks {MARKER}")
    return template.replace(MARKER, values_table((chart / "values.yaml").read_text()))


def main(argv: list[str] | None = None) -> int:
    """Write or check the README; report undocumented keys."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    _, missing = rows((args.chart / "values.yaml").read_text())
    if missing:
        print("values.yaml keys without a `# --` comment: " + ", ".join(missing), file=sys.stderr)
        return 1
    text, readme = render(args.chart), args.chart / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text() != text:
            print(f"{readme} is stale: run scripts/helm-readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
