"""The console's files: everything it loads is in the package, nothing comes from elsewhere.

Read from the source tree, as the wheel carries it (pyproject's package-data names every
kind of file the console has).
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

from carina.platform.controlplane.console.routes import MEDIA_TYPES, STATIC, console_files

ROOT = Path(__file__).resolve().parents[2]
VENDOR = STATIC / "vendor"
OWN = [p for p in STATIC.rglob("*") if p.is_file() and VENDOR not in p.parents]
SCRIPTS = sorted(STATIC.rglob("*.js"))
INDEX = STATIC / "index.html"

# What makes a browser fetch something: an import, a src/href, a CSS url(), a fetch call.
STATIC_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;'"]*?\bfrom\s*["']([^"']+)["']""", re.M)
BARE_IMPORT = re.compile(r"""^\s*import\s*["']([^"']+)["']""", re.M)
DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"']+)["']\s*\)""")
ATTRIBUTE_URL = re.compile(
    r"""\b(?:src|href|action|srcset|poster|data)\s*=\s*["']([^"']*)["']""", re.I
)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")
FETCH_URL = re.compile(r"""\bfetch\(\s*["'`]([^"'`]+)""")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


def references(path: Path) -> list[str]:
    """Every URL in `path` that would make the browser load something."""
    text = path.read_text()
    found: list[str] = []
    if path.suffix == ".js":
        for pattern in (STATIC_IMPORT, BARE_IMPORT, DYNAMIC_IMPORT, FETCH_URL):
            found += pattern.findall(text)
    if path.suffix == ".html":
        found += ATTRIBUTE_URL.findall(text)
    if path.suffix in (".css", ".html"):
        found += CSS_URL.findall(text)
    return found


@pytest.mark.parametrize("path", sorted(STATIC.rglob("*.*")), ids=lambda p: p.name)
def test_nothing_the_console_loads_comes_from_another_origin(path: Path) -> None:
    if path.suffix not in (".js", ".html", ".css"):
        return
    external = [url for url in references(path) if EXTERNAL.match(url)]
    assert external == [], f"{path.relative_to(STATIC)} loads {external}"


@pytest.mark.parametrize("path", OWN, ids=lambda p: str(p.relative_to(STATIC)))
def test_the_consoles_own_files_name_no_external_url_at_all(path: Path) -> None:
    assert not re.search(r"https?://|\bwss?://", path.read_text()), path


@pytest.mark.parametrize("path", [*SCRIPTS, INDEX], ids=lambda p: str(p.relative_to(STATIC)))
def test_every_reference_resolves_to_a_file_the_console_serves(path: Path) -> None:
    served = console_files()
    base = PurePosixPath(path.relative_to(STATIC).as_posix()).parent
    for url in references(path):
        if url.startswith(("#", "data:")):
            continue
        assert url.startswith(("./", "../")) or path.suffix == ".html", (path, url)
        resolved = (STATIC / base / url).resolve().relative_to(STATIC).as_posix()
        assert resolved in served, f"{path.relative_to(STATIC)} refers to {url}, not served"


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    html = INDEX.read_text()
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S | re.I):
        assert script.strip() == "", "inline script: the CSP would refuse it"
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="js/app.js">']
    assert not re.search(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:", html, re.I)


@pytest.mark.parametrize(
    "path", [p for p in SCRIPTS if VENDOR not in p.parents], ids=lambda p: p.name
)
def test_the_consoles_scripts_build_no_html_from_strings_and_keep_no_token_on_disk(
    path: Path,
) -> None:
    text = path.read_text()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in text, f"{path.name} uses {unsafe}"
    assert "new Function" not in text
    assert "localStorage" not in text, "the token belongs in sessionStorage only"
    assert "document.cookie" not in text
    assert "EventSource" not in text or path.name == "sse.js", "EventSource puts no header"


def test_the_token_leaves_the_page_only_as_an_authorization_header() -> None:
    api = (STATIC / "js" / "api.js").read_text()
    assert "sessionStorage.getItem(TOKEN_KEY)" in api
    assert "headers.Authorization = `Bearer ${bearer}`" in api
    assert 'credentials: "omit"' in api
    # The token is read in api.js alone; no other module touches sessionStorage's token.
    others = [p.name for p in SCRIPTS if p.name != "api.js" and "carina.token" in p.read_text()]
    assert others == []


def test_the_wheel_carries_every_kind_of_console_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["*"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            assert any(fnmatch(path.name, p) for p in patterns), f"{path.name} left out"
    assert set(MEDIA_TYPES) <= {p.removeprefix("*") for p in patterns}


def test_the_vendored_chart_library_keeps_its_licence_and_version() -> None:
    note = (VENDOR / "uplot" / "VENDORED.txt").read_text()
    version = re.search(r"uPlot (\d+\.\d+\.\d+)", note)
    assert version, note
    assert "scripts/vendor-uplot.sh" in note
    assert "MIT License" in (VENDOR / "uplot" / "LICENSE.txt").read_text()
    assert (ROOT / "scripts" / "vendor-uplot.sh").exists()


def test_references_sees_each_way_a_page_loads_something(tmp_path: Path) -> None:
    script = tmp_path / "a.js"
    script.write_text(
        'import uPlot from "https://cdn.example/uplot.js";\n'
        'import "//cdn.example/side-effect.js";\n'
        'const m = await import("./b.js");\n'
        'fetch("https://api.example/x");\n'
    )
    page = tmp_path / "a.html"
    page.write_text('<link href="https://fonts.example/f.css"><img src="x.png">')
    assert references(script) == [
        "https://cdn.example/uplot.js",
        "//cdn.example/side-effect.js",
        "./b.js",
        "https://api.example/x",
    ]
    assert references(page) == ["https://fonts.example/f.css", "x.png"]
    assert "./pages/job.js" in references(STATIC / "js" / "app.js")
