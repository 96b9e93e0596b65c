"""Collect what a gateway served in this process logs, to assert no traceback or ERROR."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

FAKES = ("websockets.server", "tests.fakes")


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def failures(self) -> list[str]:
        """ERROR records and anything logged with a traceback, by the gateway (the provider
        fakes' servers log through `websockets.server`, which the gateway does not run)."""
        return [f"{r.name} {r.levelname}: {r.getMessage()}" for r in self.records
                if (r.levelno >= logging.ERROR or r.exc_info)
                and not r.name.startswith(FAKES)]


@contextlib.contextmanager
def captured_logs() -> Iterator[LogRecords]:
    """Every record of the root logger and of uvicorn's (which does not propagate)."""
    handler = LogRecords()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
