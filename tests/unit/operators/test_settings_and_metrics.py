"""Operator settings come from the chart's environment; metric names are listed once."""

from __future__ import annotations

import pytest

from carina.operators.runtime import metrics
from carina.operators.runtime.settings import Settings, SettingsError


def test_settings_read_the_variables_the_chart_sets():
    s = Settings.from_env(
        {
            "CARINA_OPERATOR_PEERING": "carina",
            "CARINA_OPERATOR_NAMESPACES": "team-a, team-b",
            "CARINA_OPERATOR_LOG_LEVEL": "debug",
            "CARINA_OPERATOR_PORT": "9000",
            "CARINA_OPERATOR_WORKER_IMAGE": "reg/carina:1.2",
            "CARINA_OPERATOR_WORKER_SERVICE_ACCOUNT": "carina-worker",
            "CARINA_OPERATOR_WORKER_METRICS_PORT": "9500",
            "CARINA_OPERATOR_IMAGE_PULL_SECRETS": "a,b",
        }
    )
    assert (s.peering, s.namespaces, s.log_level, s.port) == (
        "carina",
        ("team-a", "team-b"),
        "DEBUG",
        9000,
    )
    r = s.render
    assert (r.image, r.service_account, r.metrics_port, r.image_pull_secrets) == (
        "reg/carina:1.2",
        "carina-worker",
        9500,
        ("a", "b"),
    )


def test_empty_values_keep_defaults():
    s = Settings.from_env({"CARINA_OPERATOR_NAMESPACES": "", "CARINA_OPERATOR_PEERING": ""})
    assert s.namespaces == ()
    assert s.peering == ""
    assert s.port == 8080


def test_every_listed_metric_is_registered_and_nothing_else():
    registered = {
        f"{f.name}_total" if f.type == "counter" else f.name for f in metrics.REGISTRY.collect()
    }
    assert registered == set(metrics.ALL)
    assert all(name.startswith("carina_") for name in metrics.ALL)


def test_a_bad_value_is_refused_naming_the_variable():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CARINA_OPERATOR_PORT": "eighty", "CARINA_OPERATOR_WORKERS": "0"})
    assert "CARINA_OPERATOR_PORT: Input should be a valid integer" in str(info.value)
    assert "CARINA_OPERATOR_WORKERS" in str(info.value)
