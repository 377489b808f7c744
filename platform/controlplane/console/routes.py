"""/console/: the web console's files, with a strict Content-Security-Policy.

The console is plain HTML, CSS and ES modules under `static/` (uPlot vendored under
`static/vendor/`). They are read into memory once when the app is built, so serving them
never waits on the disk, and only files of the package can be served: a path is looked up in
that table, never joined onto a folder. The pages hold no data; every fact they show comes
from the REST API, called by `fetch` with the bearer token the user pasted (kept in
sessionStorage, sent only as an Authorization header, so there is no cookie and no CSRF).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/console"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}

# Nothing from elsewhere, no inline script or style, no plugin, no framing; data: images are
# what a canvas chart's export would be, and nothing else needs them.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # A new console version is picked up at the next load; the files are small.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class ConsoleFile:
    body: bytes
    media_type: str


def console_files(root: Path = STATIC) -> dict[str, ConsoleFile]:
    """Every servable file under `root` by its URL path relative to /console/ ("" = index)."""
    files: dict[str, ConsoleFile] = {}
    for path in sorted(root.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        files[path.relative_to(root).as_posix()] = ConsoleFile(path.read_bytes(), media_type)
    if "index.html" in files:
        files[""] = files["index.html"]
    return files


def console_response(files: dict[str, ConsoleFile], path: str) -> Response:
    """The file at `path`, with the console's security headers; a 404 page if none."""
    found = files.get(path)
    if found is None:
        return Response(
            "not found\n", status_code=404, media_type=MEDIA_TYPES[".txt"], headers=SECURITY_HEADERS
        )
    return Response(found.body, media_type=found.media_type, headers=SECURITY_HEADERS)


def make_router(root: Path = STATIC) -> APIRouter:
    """The console's routes over the files under `root`, read now."""
    files = console_files(root)
    router = APIRouter(tags=["console"], include_in_schema=False)

    @router.get("/")
    async def root_redirect() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get(PREFIX)
    async def console_redirect() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get(PREFIX + "/{path:path}")
    async def console_file(path: str) -> Response:
        return console_response(files, path)

    return router
