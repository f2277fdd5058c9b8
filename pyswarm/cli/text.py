"""Text that others wrote, made safe to show: node hostnames, engine versions and errors (what a remote
engine reports), and names, images, labels and messages (what any client of the API may have set).

Shown as text, never read as instructions to the terminal or to rich: escape sequences (ANSI CSI, OSC,
and the rest) and control characters (C0, DEL, C1) are taken out, with the bidirectional-override
characters that make a line read differently than it is; and rich is given it as a Text (no markup, no
emoji codes), or with its markup escaped where it goes into a markup string.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

# An escape sequence: CSI (ESC [ ... final byte, or its 8-bit form 0x9b), OSC/DCS/SOS/PM/APC strings (up to
# BEL or ST, or the end of the text), or any other two-byte ESC sequence.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_LINE_BREAKS = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]")
# C0 (but tab and newline), DEL and C1; the bidirectional embeddings, overrides and isolates.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object, one_line: bool = False) -> str:
    """`text` without escape sequences or control characters; tabs and newlines are kept, or, with one_line,
    made spaces (for a table cell, or anything shown on one line)."""
    cleaned = _ESCAPES.sub("", str(text))
    cleaned = _LINE_BREAKS.sub(" ", cleaned) if one_line else cleaned.replace("\r\n", "\n")
    return _CONTROLS.sub("", cleaned)


def cell(text: object) -> Text:
    """`text` for a rich table cell: one line of printable text, that rich shows as it is (`web[/b]`, or
    `db:fire:`), with no markup or emoji code read in it."""
    return Text(printable(text, one_line=True))


def escaped(text: object, one_line: bool = True) -> str:
    """`text` to put in a string that rich reads as markup (`f"[red]{escaped(error)}[/red]"`): printable
    text (one line, unless told), its markup escaped. (Emoji codes, `:fire:`, are read unless the console
    has them off; rather use cell, a Text, where no markup is needed.)"""
    return escape(printable(text, one_line=one_line))
