"""The committed dashboards are what dashboards/generate.py writes, and hang together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helm_chart import ROOT

DASHBOARDS = ROOT / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.json"))


def test_the_committed_json_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_five_dashboards_exist_with_distinct_uids() -> None:
    assert [p.name for p in FILES] == [
        "job.json",
        "nodes.json",
        "operator-and-control-plane.json",
        "platform.json",
        "queues.json",
    ]
    uids = [json.loads(p.read_text())["uid"] for p in FILES]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_query_panel_uses_the_datasource_variable_and_has_a_unit(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["templating"]["list"][0]["name"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        if panel["type"] in {"row", "text"}:
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_panels_stay_inside_the_grid_without_overlapping(path: Path) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(path.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine
