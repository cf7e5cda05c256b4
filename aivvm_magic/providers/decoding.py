"""Bytes-to-text step of the streaming ladder: incremental UTF-8 with the protocol's fallback.

The original client decoded every network read on its own, so a character split across two
reads came out garbled. Here one incremental decoder sees the whole stream: a split character
waits in the decoder until its last byte arrives. Only bytes that are invalid UTF-8 in their own
right fall back to ``unicode-escape``, as the design document asks.
"""

from __future__ import annotations

import codecs

_ERRORS = "aivvm-unicode-escape"


def _unicode_escape_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return bytes(bad).decode("unicode-escape"), exc.end


codecs.register_error(_ERRORS, _unicode_escape_fallback)


class TextDecoder:
    """An incremental UTF-8 decoder; feed it reads with ``decode``, then call ``flush``."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)

    def decode(self, data: bytes) -> str:
        """Text for ``data``; a trailing incomplete character is held back for the next call."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever is still held back, decoded with the fallback (the stream has ended)."""
        return self._decoder.decode(b"", final=True)
