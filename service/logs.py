"""Structured JSON logs. Only whitelisted fields are written: never a token, a name, a date of
birth or an NHS number, whatever a caller passes in `extra`."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_SAFE_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "client_id",
    "issuer",
    "error",
    "problem",
    "where",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for field in _SAFE_FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("neglect-service")
    root = logging.getLogger()
    # Replace only our own handler, so a host (pytest, a supervisor) keeps its handlers.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "neglect-service"] + [handler]
    root.setLevel(level)
    # uvicorn's access log would print raw query strings; our middleware logs requests instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
