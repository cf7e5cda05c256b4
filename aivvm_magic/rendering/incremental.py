"""Markdown for a reply that is still arriving: only its last two blocks are re-rendered.

The live view shows the reply up to 20 times a second. Rendering all of it each time costs
time in proportion to its length, so a long reply would slow down its own stream. But text
appended to a markdown document can only change its last top-level block (the paragraph, list,
fence or table still being written) and the block just before it, which the last one can join
as it grows (a list item, a lazy continuation line): a block that two others already follow is
final. So once such blocks are seen their HTML is kept, and only the text after them is parsed
again.

One construct breaks that rule: a link reference definition (``[x]: /url``) changes links
anywhere in the document, before it as well. A text that may hold one (it contains ``]:``) is
rendered whole every time, as before.

:meth:`MarkdownStream.html` gives exactly what ``render_markdown(text)`` gives; the tests check
that over generated documents cut into random chunks.
"""

from __future__ import annotations

import html
import re
from typing import Any

from markdown_it.token import Token

from .markdown import parse_markdown, render_markdown, render_text, render_tokens

#: An unfinished block longer than this is shown as plain text while it streams, and its lines
#: are parsed again only each time they have doubled, so a huge paragraph or code block costs
#: linear time.
OPEN_LIMIT = 16_000

# markdown-it's own line breaks: the token maps count lines split this way.
_NEWLINE = re.compile(r"\r\n?|\n")
# Every link reference definition contains this; so do some texts that have none, which only
# costs them the whole-text rendering.
_REFERENCE_MARK = "]:"


def _line_offset(text: str, line: int) -> int:
    """The index in ``text`` where line number ``line`` (from 0) starts."""
    if line == 0:
        return 0
    for number, match in enumerate(_NEWLINE.finditer(text), 1):
        if number == line:
            return match.end()
    return len(text)


def _omitted(chars: int) -> str:
    note = f"… {chars:,} characters above; the whole reply appears when done"
    return f"<p><em>{html.escape(note)}</em></p>"


# A table row as models write them (a leading pipe), and the start of a delimiter row.
_ROW = re.compile(r" {0,3}\|")
_DELIMITER_ROW = re.compile(r" {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
_DELIMITER_START = re.compile(r"[ \t|:-]*")


#: How far back :func:`table_head_start` looks for a table's delimiter row.
_TABLE_WINDOW = 20_000


def _cells(row: str) -> int:
    core = row.strip()
    core = core[1:] if core.startswith("|") else core
    core = core[:-1] if core.endswith("|") else core
    return len(core.split("|"))


def table_head_start(text: str) -> int | None:
    """Where a table's header row begins at the end of ``text``, while its delimiter row has
    not arrived (markdown would show the row as a paragraph of pipes until it does); else None.

    The live view leaves such a row out until the table can be drawn. A row is a line that
    starts with ``|``, as models write them; one under a delimiter row is a table's next row,
    which shows as one at once. Only the last ``_TABLE_WINDOW`` characters are looked at, so a
    draw costs the same however long the reply.
    """
    offset = 0
    if len(text) > _TABLE_WINDOW:
        offset = (
            text.index("\n", len(text) - _TABLE_WINDOW) + 1
            if "\n" in text[-_TABLE_WINDOW:]
            else len(text)
        )
    lines = text[offset:].split("\n")
    last = lines[-1]
    if len(lines) >= 2 and _ROW.match(lines[-2]) and _DELIMITER_START.fullmatch(last):
        head = len(lines) - 2
        if _DELIMITER_ROW.fullmatch(last) and _cells(last) == _cells(lines[head]):
            return None  # a header and its delimiter row: a table already
    elif _ROW.match(last):
        head = len(lines) - 1
    else:
        return None
    above = head
    while above >= 0 and _ROW.match(lines[above]):
        if _DELIMITER_ROW.fullmatch(lines[above]):
            return None  # a row of a table that is drawn already
        above -= 1
    return offset + sum(len(line) + 1 for line in lines[:head])


def plain_tail(text: str, keep: int) -> str:
    """Safe HTML for the live view of a ``text`` longer than ``keep``: a note of how much is
    left out, then its last ``keep`` characters as plain text."""
    tail = text[-keep:]
    return _omitted(len(text) - len(tail)) + render_text(tail)


class MarkdownStream:
    """Renders one growing text: call :meth:`live` as it grows, then :meth:`html` once.

    Each call must pass the whole text so far, which only ever grows. Not thread-safe: one
    thread at a time (the display's flusher, then its owner once the flusher has stopped).
    """

    def __init__(self, open_limit: int = OPEN_LIMIT) -> None:
        self._open_limit = open_limit
        #: (source characters, sanitised HTML) of each run of final blocks, in order.
        self._frozen: list[tuple[int, str]] = []
        self._frozen_chars = 0
        self._checked = 0
        self._whole = False
        self._parse_at = 0

    @property
    def seen_chars(self) -> int:
        """How long the text was at the last call: the next one must be at least as long."""
        return self._checked

    @property
    def frozen_chars(self) -> int:
        """How much of the text is final and already rendered."""
        return self._frozen_chars

    def _check_references(self, text: str) -> None:
        if len(text) < self._checked:
            raise ValueError("the text of a MarkdownStream can only grow")
        if not self._whole and _REFERENCE_MARK in text[max(0, self._checked - 1) :]:
            self._whole = True
        self._checked = len(text)

    def _advance(self, text: str) -> tuple[list[Token], dict[str, Any]] | None:
        """Freeze the blocks of ``text`` that are final; the open rest's tokens, if parsed.

        ``None`` when the open rest is too long to parse at every update.
        """
        open_text = text[self._frozen_chars :]
        if len(open_text) > self._open_limit:
            self._advance_long(open_text)
            open_text = text[self._frozen_chars :]
            if len(open_text) > self._open_limit:
                return None
        tokens, env = parse_markdown(open_text)
        return tokens[self._freeze(open_text, tokens, env) :], env

    def _freeze(self, source: str, tokens: list[Token], env: dict[str, Any]) -> int:
        """Keep the HTML of every top-level block of ``source`` but the last two; return the
        index of the first token not kept (0 when nothing was kept).

        The last block may still grow, and as it grows it can join the block before it: a
        paragraph "1" that becomes "1. second" joins the list above it (and makes its earlier
        items loose), a line that becomes "--" is a lazy continuation of the quote above it.
        Nothing that is appended reaches further back.
        """
        starts = [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting != -1]
        if len(starts) < 3:
            return 0
        last = starts[-2]
        assert tokens[last].map is not None
        chars = _line_offset(source, tokens[last].map[0])
        self._frozen.append((chars, render_tokens(tokens[:last], env)))
        self._frozen_chars += chars
        self._parse_at = 0
        return last

    def _advance_long(self, open_text: str) -> None:
        """Try to freeze blocks of a long open rest without parsing it at every update.

        Blocks end at line ends, so its whole lines are parsed, and only once they have
        doubled since a parse that found nothing to keep (one huge paragraph or code block):
        the work stays linear in the length of the reply. A rest without a line end (a
        paragraph written as one line) is not parsed at all until the end.
        """
        end = open_text.rfind("\n") + 1
        if end == 0 or end < self._parse_at:
            return
        lines = open_text[:end]
        tokens, env = parse_markdown(lines)
        if self._freeze(lines, tokens, env) == 0:
            self._parse_at = 2 * end

    def live(self, text: str, budget: int = 100_000) -> str:
        """Sanitised HTML to show while ``text`` streams; cheap however long it grows.

        Final blocks are shown as far back as ``budget`` characters of source before the open
        block, after a note of how much is left out. An open block too long to parse at every
        update is shown as plain text, its last ``open_limit`` characters only.
        """
        self._check_references(text)
        if self._whole:
            if len(text) <= budget:
                return render_markdown(text)
            return self._plain_tail(text)
        parsed = self._advance(text)
        if parsed is None:
            return self._plain_tail(text)
        room, skipped = budget, self._frozen_chars
        shown: list[str] = []
        for chars, piece in reversed(self._frozen):
            if chars > room:
                break
            shown.append(piece)
            room -= chars
            skipped -= chars
        shown.reverse()
        note = _omitted(skipped) if skipped else ""
        return note + "".join(shown) + render_tokens(*parsed)

    def _plain_tail(self, text: str) -> str:
        return plain_tail(text, self._open_limit)

    def html(self, text: str) -> str:
        """Sanitised HTML of all of ``text``: the same as ``render_markdown(text)``."""
        self._check_references(text)
        if self._whole:
            return render_markdown(text)
        frozen = "".join(piece for _, piece in self._frozen)
        return frozen + render_markdown(text[self._frozen_chars :])
