"""Values that carry an API key but never show it in a repr.

IPython's Verbose tracebacks (``%xmode Verbose``), debuggers and logging of locals print each
frame's variables with ``repr``. The key, and the request body and headers that hold it, are
kept in these types from the moment a provider reads the key, so no repr can leak it; they
behave as the plain ``str``/``bytes`` they are everywhere else.
"""

from __future__ import annotations


class SecretStr(str):
    """A str whose repr hides its value (``'<hidden>'``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<hidden>'" if self else "''"


class SecretBytes(bytes):
    """Bytes (a request body holding a key) whose repr says only their size."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<request body, {len(self):,} bytes>"


def hidden(value: str) -> SecretStr:
    """``value`` as a :class:`SecretStr`."""
    return value if isinstance(value, SecretStr) else SecretStr(value)
