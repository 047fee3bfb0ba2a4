"""Text for people: the demo's timeline lines, and aligned tables for status and summaries.

The demo narrates what happens as it happens (a clock since the start, the
step, what was seen) and ends with a table; `sandbox status` is a table too.
Colour only on a terminal, never in a pipe or a log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = ["Narrator", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on the widest cell, headers first; no trailing spaces."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in cells]
    return "\n".join(lines)


class Narrator:
    """Writes timeline lines `  12.3s  step  text` to a stream, coloured on a terminal."""

    _COLOURS = {"ok": "32", "fail": "31", "step": "1", "dim": "2", "warn": "33"}

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        if colour is None:
            colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour

    def paint(self, text: str, style: str) -> str:
        if not self.colour or style not in self._COLOURS:
            return text
        return f"\x1b[{self._COLOURS[style]}m{text}\x1b[0m"

    def line(self, elapsed: float, text: str, *, style: str = "") -> None:
        stamp = self.paint(f"{elapsed:7.1f}s", "dim")
        self.stream.write(f"{stamp}  {self.paint(text, style) if style else text}\n")
        self.stream.flush()

    def say(self, text: str = "", *, style: str = "") -> None:
        self.stream.write((self.paint(text, style) if style else text) + "\n")
        self.stream.flush()
