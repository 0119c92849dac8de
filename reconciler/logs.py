"""Logging: human text or JSON lines, chosen by setting. Action logs carry scope, set, node."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

_FIELDS = ("scope", "set_id", "node", "action", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        # action lines also name scope, set, node (the reason is usually in the message already)
        fields = [
            f"{k}={getattr(record, k)}" for k in ("scope", "set_id", "node") if getattr(record, k, None)
        ]
        text = super().format(record)
        return f"{text} [{' '.join(fields)}]" if fields else text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


class LogOnce:
    """Logs each message of a repeated list (a pass's warnings) when it first appears, not on
    every pass: a message that goes away and comes back is logged again."""

    def __init__(self, logger: logging.Logger, prefix: str = "", level: int = logging.WARNING) -> None:
        self._log, self._prefix, self._level = logger, prefix, level
        self._current: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def update(self, messages: Iterable[str]) -> list[str]:
        """Log the messages not in the last update; returns them."""
        now = dict.fromkeys(messages)
        with self._lock:
            new = [m for m in now if m not in self._current]
            self._current = frozenset(now)
        for m in new:
            self._log.log(self._level, "%s%s", self._prefix, m)
        return new
