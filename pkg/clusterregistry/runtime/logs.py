"""Logging set-up shared by every process: JSON lines for machines, one readable line for people.

In a cluster, logs are collected from stderr and parsed, so each record is a
single JSON object whose structured fields are real keys. On a terminal the
same records read as one short line each. Services log with the standard
`logging` module and attach fields with `extra=fields(kind="pod")`; only the
entry point calls `configure`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from clusterregistry.errors import ConfigError

__all__ = ["FORMAT_ENV", "JsonFormatter", "TextFormatter", "configure", "fields"]

FORMAT_ENV = "CLUSTERREGISTRY_LOG_FORMAT"
_PREFIX = "clusterregistry."
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})
# Third-party loggers that would drown the process's own records.
_QUIET = {"aiohttp.access": logging.WARNING}


def fields(**kw: Any) -> dict[str, Any]:
    """Structured fields for one record: `log.info("...", extra=fields(kind="pod"))`."""
    return {"fields": kw}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the fields, and exc when present.

    A field named like one of the fixed keys is written as `fields.<name>`,
    so it can neither overwrite them nor get lost.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            line[f"fields.{key}" if key in _RESERVED else key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`15:20:13.123 INFO relay: published 42 events kind=pod`, local time, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        head = f"{clock}.{int(record.msecs):03d} {record.levelname}"
        parts = [f"{head} {record.name.removeprefix(_PREFIX)}: {record.getMessage()}"]
        parts += [f"{key}={_text_value(value)}" for key, value in _record_fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `configure` installs; its class marks it so a second call replaces it."""


def _wants_json(stream: TextIO) -> bool:
    choice = os.environ.get(FORMAT_ENV, "").strip().lower()
    if choice in ("json", "text"):
        return choice == "json"
    if choice:
        raise ConfigError(f"{FORMAT_ENV}: expected 'json' or 'text', got {choice!r}")
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure(
    *, level: str = "INFO", json_format: bool | None = None, stream: TextIO | None = None
) -> None:
    """Send every record at `level` or above to `stream` (default: sys.stderr at call time).

    `json_format=None` picks JSON unless the stream is a terminal; the
    environment variable CLUSTERREGISTRY_LOG_FORMAT (`json` or `text`)
    overrides that guess. Calling again replaces the previous set-up instead
    of adding a second handler; handlers installed by others are left alone.
    """
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r}")
    out = sys.stderr if stream is None else stream
    use_json = _wants_json(out) if json_format is None else json_format

    handler = _Handler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, quiet_level in _QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
