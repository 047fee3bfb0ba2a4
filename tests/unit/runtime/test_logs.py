"""Log set-up: JSON lines a pipeline can parse, a readable terminal line, and no duplicates."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from clusterregistry.errors import ConfigError
from clusterregistry.runtime import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_carries_the_fixed_keys_and_the_fields() -> None:
    out = io.StringIO()
    logs.configure(json_format=True, stream=out)
    logging.getLogger("clusterregistry.relay").info(
        "published %d events", 42, extra=logs.fields(kind="pod", namespace="default")
    )
    [line] = json_lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert datetime.fromisoformat(line["ts"]).utcoffset() is not None
    assert line["level"] == "INFO"
    assert line["logger"] == "clusterregistry.relay"
    assert line["msg"] == "published 42 events"
    assert line["kind"] == "pod"
    assert line["namespace"] == "default"
    assert "exc" not in line


def test_json_line_carries_the_traceback() -> None:
    out = io.StringIO()
    logs.configure(json_format=True, stream=out)
    settings: dict[str, str] = {}
    try:
        _ = settings["missing"]
    except KeyError:
        logging.getLogger("x").exception("lookup failed", extra=logs.fields(key="missing"))
    [line] = json_lines(out)
    assert line["level"] == "ERROR"
    assert line["key"] == "missing"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in line["exc"]


def test_json_fields_never_overwrite_the_fixed_keys_and_need_not_be_json() -> None:
    out = io.StringIO()
    logs.configure(json_format=True, stream=out)
    logging.getLogger("x").warning(
        "hello", extra=logs.fields(msg="shadow", ratio=3.5, obj=object())
    )
    [line] = json_lines(out)
    assert line["msg"] == "hello"
    assert line["fields.msg"] == "shadow"
    assert line["ratio"] == 3.5
    assert line["obj"].startswith("<object object")


def test_terminal_line_is_readable() -> None:
    out = io.StringIO()
    logs.configure(json_format=False, stream=out)
    logging.getLogger("clusterregistry.relay").info(
        "published %d events", 42, extra=logs.fields(kind="pod", reason="two words")
    )
    assert re.fullmatch(
        r'\d\d:\d\d:\d\d\.\d{3} INFO relay: published 42 events kind=pod reason="two words"\n',
        out.getvalue(),
    )


def test_terminal_line_puts_the_traceback_below() -> None:
    out = io.StringIO()
    logs.configure(json_format=False, stream=out)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("other.lib").exception("failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(" ERROR other.lib: failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad"


@pytest.mark.parametrize(
    ("stream", "env", "is_json"),
    [
        (io.StringIO(), None, True),
        (Terminal(), None, False),
        (Terminal(), "json", True),
        (io.StringIO(), "text", False),
    ],
    ids=["pipe", "terminal", "terminal-env-json", "pipe-env-text"],
)
def test_format_follows_the_stream_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, env: str | None, is_json: bool
) -> None:
    if env is not None:
        monkeypatch.setenv(logs.FORMAT_ENV, env)
    logs.configure(stream=stream)
    logging.getLogger("x").info("hi")
    assert stream.getvalue().startswith("{") == is_json


def test_configure_twice_replaces_instead_of_duplicating() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure(json_format=True, stream=first)
    logs.configure(json_format=True, stream=second, level="debug")
    logging.getLogger("x").debug("once")
    assert first.getvalue() == ""
    assert [line["msg"] for line in json_lines(second)] == ["once"]


def test_level_filters_and_aiohttp_access_is_quiet() -> None:
    out = io.StringIO()
    logs.configure(level="DEBUG", json_format=True, stream=out)
    logging.getLogger("aiohttp.access").info("GET /healthz 200")
    logging.getLogger("aiohttp.access").warning("slow")
    logs.configure(level="WARNING", json_format=True, stream=out)
    logging.getLogger("x").info("dropped")
    assert [line["msg"] for line in json_lines(out)] == ["slow"]


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="log level"):
        logs.configure(level="LOUD", stream=io.StringIO())


def test_unknown_format_in_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "yaml")
    with pytest.raises(ConfigError, match=logs.FORMAT_ENV):
        logs.configure(stream=io.StringIO())
