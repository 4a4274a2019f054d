"""Structured logs: one JSON object per line, carrying the interLink session id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

# The ``InterLink-Http-Session`` header of the request being served ("-" outside one).
session_var: contextvars.ContextVar[str] = contextvars.ContextVar("session", default="-")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, session and extras."""

    _STD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "session": session_var.get(),
        }
        for k, v in record.__dict__.items():
            if k not in self._STD and not k.startswith("_") and k != "color_message":
                out[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The gatekeeper logs each request (with its session); uvicorn's access log would not.
    logging.getLogger("uvicorn.access").disabled = True
