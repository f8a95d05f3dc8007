"""What the hook logs, kept for the tests to read."""

from __future__ import annotations


class RecordedWarnings(list[str]):
    """Stands in for the hook's (structlog) logger: keeps each warning as its formatted line."""

    def warning(self, message: str, *args: object) -> None:
        self.append(message % args)
