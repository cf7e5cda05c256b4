"""Server-sent events from text chunks: the text-to-events step of the streaming ladder.

An event's lines can be split across network reads anywhere, even inside ``data:`` or between
``\\r`` and ``\\n``; the parser keeps the unfinished line and yields each event once the blank
line that ends it has arrived. Only the ``data`` field matters to the chat APIs, so events are
yielded as their data (several ``data:`` lines joined by newlines).
"""

from __future__ import annotations

import re

# Lines end in \n, \r\n or a lone \r. A \r at the very end of the text so far might be the
# first half of \r\n, so it waits for more text. One scan of each read, whatever the endings.
_LINE_END = re.compile(r"\r\n|\n|\r(?!\Z)")


class SSEParser:
    """Feed text with ``feed``; it returns the data of every event completed by that text."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []
        self._has_data = False

    def feed(self, text: str) -> list[str]:
        """The data of each event ``text`` completes, in order."""
        events: list[str] = []
        buffer = self._pending + text
        start = 0
        for end in _LINE_END.finditer(buffer):
            self._line(buffer[start : end.start()], events)
            start = end.end()
        self._pending = buffer[start:]
        return events

    def close(self) -> list[str]:
        """The event a final lone ``\r`` completes, if any; an unterminated event is dropped."""
        # The spec drops an event not ended by a blank line; a caller checking for a final
        # marker (OpenAI's [DONE]) then sees the stream as cut short, which it is.
        events: list[str] = []
        if self._pending.endswith("\r"):
            self._line(self._pending[:-1], events)
        self._pending = ""
        self._data = []
        self._has_data = False
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._has_data:
                events.append("\n".join(self._data))
            self._data = []
            self._has_data = False
            return
        if line.startswith(":"):
            return  # a comment (servers send them as keep-alives)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
