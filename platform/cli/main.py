"""The `carina` command line: one entry for people, CI and the chart.

Commands: `version`, `crds`, `validate`, `operator`, `health-agent` in offline.py; `up`, `run` in
embedded.py; `submit`, `get`, `list`, `delete`, `logs`, `suspend`, `resume` in jobs.py;
`queues` (and `queues show`, `queues local`) in queues.py; `history` in history.py; `sweep` in
sweeps.py (what the last four share is in common.py). Each command is a thin adapter around a
function of carina.platform; errors are printed as field paths and rules, never as tracebacks.
"""

from __future__ import annotations

from carina.platform.cli import embedded, history, jobs, offline, queues, sweeps
from carina.platform.cli.app import app

# Importing them registers their commands.
COMMAND_MODULES = (offline, embedded, jobs, queues, history, sweeps)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
