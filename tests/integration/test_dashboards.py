"""The dashboards and alert rules, checked against reality.

- every PromQL expression (panels, variables, rules) is parsed and run by a real Prometheus;
- the rule file passes `promtool check rules` and loads into that Prometheus healthy;
- every metric name they select is one Carina's code exports (tests/metrics_catalog.py) or a
  named external exporter's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from metrics_catalog import check_owner_lists, series_names
from promql_sources import RULES_FILE, Expression, all_expressions, as_promql, metric_names

from carina.testcluster import PrometheusServer
from carina.testcluster.processes import wait_until

EXPRESSIONS = all_expressions()


def _id(expression: Expression) -> str:
    return expression.source


def test_dashboards_and_rules_have_expressions() -> None:
    sources = {e.source.split(":")[0] for e in EXPRESSIONS}
    assert sources == {
        "platform.json",
        "job.json",
        "operator-and-control-plane.json",
        "queues.json",
        "nodes.json",
        "carina-alerts.yaml",
    }


@pytest.mark.prometheus
@pytest.mark.parametrize("expression", EXPRESSIONS, ids=_id)
def test_prometheus_accepts_every_expression(
    prometheus: PrometheusServer, expression: Expression
) -> None:
    # An instant query parses and evaluates the expression; a bad one is an API error (400).
    try:
        prometheus.query(as_promql(expression.promql))
    except Exception as exc:  # urllib raises HTTPError(400) with the parser's message
        body = getattr(exc, "read", lambda: b"")().decode(errors="replace")
        pytest.fail(f"{expression.source}: Prometheus refused {expression.promql!r}: {exc} {body}")


def test_every_metric_name_is_one_the_code_exports() -> None:
    known = series_names()
    unknown = {
        f"{e.source}: {name}"
        for e in EXPRESSIONS
        for name in metric_names(e.promql)
        if name not in known
    }
    assert not unknown, "names no component exports:\n" + "\n".join(sorted(unknown))


def test_each_components_name_list_matches_its_registry() -> None:
    assert check_owner_lists() == []


def test_promtool_checks_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool not found: apt-get install prometheus (or `make deps`)"
        if os.environ.get("CARINA_REQUIRE_CLUSTER", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]


def _evaluated(rule: dict[str, Any]) -> bool:
    # Prometheus reports a rule that has not run yet with the zero time, 0001-01-01T00:00:00Z.
    return not rule.get("lastEvaluation", "0001").startswith("0001")


@pytest.mark.prometheus
def test_the_rules_load_into_prometheus_and_evaluate_healthy(
    prometheus: PrometheusServer,
) -> None:
    prometheus.set_rule_files([RULES_FILE])
    try:
        wait_until(
            lambda: bool(_rules(prometheus)) and all(map(_evaluated, _rules(prometheus))),
            30,
            "the alert rules to be evaluated",
        )
        rules = _rules(prometheus)
        assert {r["name"] for r in rules} == {
            e.source.split(": ")[1] for e in EXPRESSIONS if e.source.startswith("carina-alerts")
        }
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    finally:
        prometheus.set_rule_files([])
