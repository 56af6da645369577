"""Log output for the web app, workers and the scheduler: plain lines, or one JSON object
per line (`HUB_LOG_FORMAT=json`) with the job id and survey id when they are known."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The plain format: the job id on every line (`-` outside jobs).
TEXT_FORMAT = "%(asctime)s %(levelname)s [job %(job_id)s] %(name)s: %(message)s"
FORMATS = ("text", "json")
#: Fields a JSON line carries besides `message`, in this order.
JSON_FIELDS = ("time", "level", "logger", "message", "job_id", "survey_id")

#: Extra fields never written: RQ passes a failed job's arguments, which a plugin's job
#: may fill with anything.
UNLOGGED = ("arguments", "kwargs")

#: What the code running now works on (a survey, a connection), added to each line.
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "surveyhub_log_context", default=None
)


def bind(**fields: Any) -> None:
    """Name what the current job works on from here on (e.g. ``bind(survey_id=3)``);
    `HubJob` clears it when each job starts and ends."""
    _context.set({**(_context.get() or {}), **fields})


def clear() -> None:
    """Forget what `bind` named."""
    _context.set(None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Name what a block works on, for its log lines only."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds `job_id` (the running RQ job's, `-` outside jobs) and what `bind` named
    (`survey_id`, `connection_id`) to each record, unless the call gave them in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            from rq import get_current_job

            try:
                job = get_current_job()
            except Exception:  # noqa: BLE001  (no job, or no connection to ask)
                job = None
            record.job_id = job.id if job else "-"
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class HubJsonFormatter(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, job_id
    and survey_id when known, extra fields given to the call, and the traceback."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        from datetime import UTC
        from datetime import datetime

        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        if log_record.get("job_id") == "-":
            log_record.pop("job_id")
        for name in UNLOGGED:
            log_record.pop(name, None)


def handler(fmt: str = "text") -> logging.Handler:
    """A stderr handler writing `fmt` ("text" or "json") with the job and survey context."""
    stream = logging.StreamHandler()
    stream.addFilter(ContextFilter())
    stream.setFormatter(HubJsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return stream


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send every logger's records to stderr in `fmt`, at `level` and above."""
    root = logging.getLogger()
    root.handlers[:] = [handler(fmt)]
    root.setLevel(level)


def configure_web_logging(app: Any) -> None:
    """Log the web app's records like the workers' (used with HUB_LOG_FORMAT=json)."""
    from flask.logging import default_handler

    configure_logging(app.config["HUB_LOG_LEVEL"], app.config["HUB_LOG_FORMAT"])
    app.logger.removeHandler(default_handler)
