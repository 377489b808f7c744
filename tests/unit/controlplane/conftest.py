"""Fixtures: an app over a store-only local backend (no worker processes), three tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_support import make_settings

from carina.platform.controlplane.backends.embedded import LocalBackend
from carina.platform.controlplane.main import create_app
from carina.platform.controlplane.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, LocalBackend(settings))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
