"""A question with the notebook's context after it, within the model's input limit.

Context counts against the model's input like any text: what the user typed goes first and
whole (if it alone is too long, the request fails as it always has, saying by how much), and
each piece of context gets its configured budget or what is left of the input, whichever is
less. A piece cut to fit the input says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ContextPart", "add_context", "build_parts"]

#: What joins the question and each piece of context.
SEPARATOR = "\n\n"

#: A piece left with less room than this is not sent at all: it would be all markers.
MIN_PART_CHARS = 120

#: The last line of a piece cut to fit the model's input rather than its own budget.
CUT_NOTE = "[… cut to fit the model's input …]"


@dataclass(frozen=True)
class ContextPart:
    """One piece of context: what it is (``"the last error"``), and its text."""

    label: str
    text: str


def add_context(question: str, parts: Sequence[ContextPart]) -> str:
    """``question``, then each part's text, a blank line between them."""
    return SEPARATOR.join([question, *(p.text for p in parts if p.text)])


#: Makes a piece's text within the budget it is given.
PartMaker = Callable[[int], str]


def build_parts(makers: Sequence[tuple[str, int, PartMaker]], room: int) -> list[ContextPart]:
    """The pieces ``makers`` make, ``(label, budget, make)`` each, within ``room`` characters
    in all (the model's input less the system message and the question).

    Each gets its own budget or what is left, whichever is less; one made smaller than its
    budget for want of room says so in a last line, and one left with no room at all is a
    marker line saying that it was left out. With no room for even that, nothing is added:
    the question alone is too long, and the request says so.
    """
    parts: list[ContextPart] = []
    for label, budget, make in makers:
        left = room - len(SEPARATOR)
        squeezed = left < budget
        limit = min(budget, left - (len(CUT_NOTE) + 1 if squeezed else 0))
        if limit >= MIN_PART_CHARS:
            text = make(limit)
            if text and squeezed:
                text = f"{text}\n{CUT_NOTE}"
        else:
            text = f"[… {label} left out: no room for it in the model's input …]"
            if len(text) > left:
                continue
        if text:
            parts.append(ContextPart(label, text))
            room -= len(text) + len(SEPARATOR)
    return parts
