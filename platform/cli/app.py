"""The `carina` Typer app and its two consoles; command modules register on `app`.

`main.py` imports every command module, so the app is complete once it is imported; nothing
here imports a command module (no cycle).
"""

from __future__ import annotations

import typer
from rich.console import Console

from carina.platform.api.manifests import ManifestError

app = typer.Typer(
    name="carina",
    help="Carina: train foundation models on Kubernetes, or on this machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


def report_invalid(exc: ManifestError) -> int:
    """Print a manifest's field errors; 1, to count the failed file."""
    # soft_wrap: a long path stays on one line, so `<file>: invalid` can be searched for.
    err.print(
        f"{exc.source}: invalid", style="bold red", highlight=False, markup=False, soft_wrap=True
    )
    for error in exc.errors:
        err.print(f"  {error}", highlight=False, markup=False, soft_wrap=True)
    return 1
