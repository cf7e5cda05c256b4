"""How a failure reads to the user: :class:`AivvmError` for a failed cell, and :func:`one_line`,
the one short line every view (a cell's status, the panel, a partial turn, a conversation's
``turn_failed`` event) shows for an exception, so the same failure reads the same everywhere.

Standard library only: the conversation layer and ``%load_ext`` import it.
"""

from __future__ import annotations

__all__ = ["AivvmError", "ReplyInterrupted", "one_line"]

#: The longest line :func:`one_line` gives; an error that quotes a whole page is cut.
LINE_LIMIT = 300


class AivvmError(Exception):
    """A failed ``%%aivvm`` cell: shown as one short line, and the cell counts as failed."""

    def _render_traceback_(self) -> list[str]:
        # IPython and ipykernel show this instead of a traceback: the message is the whole
        # story (and never holds the key), while the error status still stops Run All.
        return [f"AivvmError: {self}"]


class ReplyInterrupted(KeyboardInterrupt):
    """An interrupted ``%%aivvm`` cell: one line, and still a ``KeyboardInterrupt``.

    Raised in place of the interrupt that stopped the reply, whose traceback runs through the
    HTTP stack for some 60 lines. IPython and ipykernel show :meth:`_render_traceback_`
    instead; the cell ends in error, so Run All stops there, and ``except KeyboardInterrupt``
    still catches it.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"interrupted · {self}" if str(self) else "interrupted"]


def one_line(exc: BaseException | None, limit: int = LINE_LIMIT) -> str:
    """One short line for ``exc``: ``""`` for None, ``"interrupted"`` for an interrupt, else
    the exception's own ``short`` text if it has one, its message, or its type's name.

    Whitespace runs (line breaks included) become single spaces, and a line over ``limit``
    characters ends in an ellipsis.
    """
    if exc is None:
        return ""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(getattr(exc, "short", "") or exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
