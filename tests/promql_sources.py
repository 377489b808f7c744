"""Every PromQL expression Carina ships (dashboards and alert rules), and the names it selects.

Dashboards use Grafana variables; `as_promql` replaces them with values Prometheus accepts
($__rate_interval -> 1m, a label variable -> .*), so the real server can parse the result.
`metric_names` lists the series names an expression selects: a small lexer that drops strings,
label matchers, ranges and grouping clauses, then keeps identifiers that are not functions,
aggregations or keywords.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS_DIR = ROOT / "dashboards"
RULES_FILE = DASHBOARDS_DIR / "rules" / "carina-alerts.yaml"

_GRAFANA_DURATIONS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.S)

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "start",
        "end",
    }
)


@dataclass(frozen=True)
class Expression:
    """One expression and where it comes from (file and panel, variable or rule)."""

    source: str
    promql: str


def as_promql(expr: str) -> str:
    """A Grafana expression with its variables replaced by values Prometheus accepts."""

    def value(match: re.Match[str]) -> str:
        return _GRAFANA_DURATIONS.get(match.group(1), ".*")

    return _VARIABLE.sub(value, expr)


def dashboard_expressions(path: Path) -> list[Expression]:
    """Panel targets and query variables of one dashboard JSON file."""
    board = json.loads(path.read_text())
    out = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            out.append(
                Expression(f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"])
            )
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = (
            variable["query"]["query"]
            if isinstance(variable["query"], dict)
            else (variable["query"])
        )
        match = _LABEL_VALUES.match(query)
        # label_values(selector, label) is Grafana's; Prometheus sees the selector.
        out.append(
            Expression(
                f"{path.name}: variable ${variable['name']}",
                match.group("selector") if match else query,
            )
        )
    return out


def rule_expressions(path: Path = RULES_FILE) -> list[Expression]:
    """The expressions of every alerting and recording rule in a rule file."""
    doc = yaml.safe_load(path.read_text())
    return [
        Expression(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def all_expressions() -> list[Expression]:
    """Everything Carina ships: every dashboard under dashboards/ and the alert rules."""
    out = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        out.extend(dashboard_expressions(path))
    return out + rule_expressions()


def metric_names(promql: str) -> set[str]:
    """The series names an expression selects (`up`, `carina_worker_step`, ...)."""
    text = as_promql(promql)
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', text)
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', text))
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r" ", text)
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
