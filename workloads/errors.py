"""The one exception a worker raises to exit with a contract code (see `config.ExitCode`)."""

from __future__ import annotations

from carina.workloads.config import ExitCode


class WorkerError(Exception):
    """An error with the exit code that tells the substrate whether a retry can help."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.exit_code.name} ({int(self.exit_code)}): {self.message}"
