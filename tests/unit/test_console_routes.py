"""The console's routes: its files at /console/ with strict security headers, nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from carina.platform.controlplane.backends.embedded import LocalBackend
from carina.platform.controlplane.console.routes import console_files
from carina.platform.controlplane.main import create_app
from carina.platform.controlplane.settings import Settings

TOKEN = "console-test-token"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": TOKEN, "namespaces": ["*"]}]}))
    settings = Settings(state_dir=tmp_path, tokens_file=tokens, run_workers=False)
    with TestClient(create_app(settings, LocalBackend(settings))) as c:
        yield c


def csp(response: httpx.Response) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: sources}."""
    header = response.headers["content-security-policy"]
    directives = (tuple(part.strip().split(" ", 1)) for part in header.split(";"))
    return dict(directives)


def test_the_console_page_is_served_with_a_strict_content_security_policy(
    client: TestClient,
) -> None:
    response = client.get("/console/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/app.js">' in response.text
    policy = csp(response)
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "unsafe-eval" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers


def test_modules_and_styles_carry_their_types_and_the_same_headers(client: TestClient) -> None:
    script = client.get("/console/js/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "import" in script.text
    assert csp(script)["default-src"] == "'self'"
    style = client.get("/console/console.css")
    assert style.headers["content-type"].startswith("text/css")
    assert style.headers["x-content-type-options"] == "nosniff"
    chart = client.get("/console/vendor/uplot/uPlot.esm.js")
    assert chart.status_code == 200
    assert "export { uPlot as default }" in chart.text


def test_the_root_and_the_bare_prefix_lead_to_the_console(client: TestClient) -> None:
    for path in ("/", "/console"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 307, path
        assert response.headers["location"] == "/console/"


@pytest.mark.parametrize(
    "path",
    [
        "/console/routes.py",
        "/console/../routes.py",
        "/console/%2e%2e/routes.py",
        "/console/js/../../routes.py",
        "/console/js/nothing.js",
        "/console/static/index.html",
        "/console//etc/passwd",
    ],
)
def test_only_the_console_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404, (path, response.text[:200])
    assert "import" not in response.text
    assert "TOKEN" not in response.text


def test_a_missing_console_file_is_a_404_with_the_same_headers(client: TestClient) -> None:
    response = client.get("/console/js/nothing.js")
    assert response.status_code == 404
    assert response.headers["x-content-type-options"] == "nosniff"
    assert csp(response)["default-src"] == "'self'"


def test_the_pages_need_no_token_but_the_data_does(client: TestClient) -> None:
    assert client.get("/console/").status_code == 200
    assert client.get("/api/v1/namespaces/default/trainingjobs").status_code == 401
    listed = client.get(
        "/api/v1/namespaces/default/trainingjobs",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert listed.status_code == 200


def test_the_console_is_left_out_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console") or p == "/"]


def test_console_files_serves_known_kinds_only_and_names_the_index(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "js" / "a.js").write_text("export const a = 1;")
    (tmp_path / "secret.py").write_text("TOKEN = 'x'")
    (tmp_path / "notes.md").write_text("# notes")
    files = console_files(tmp_path)
    assert set(files) == {"", "index.html", "js/a.js"}
    assert files[""].body == b"<!doctype html>"
    assert files["js/a.js"].media_type.startswith("text/javascript")
