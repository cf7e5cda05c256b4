"""The cells that ran before this one, as bounded text for a prompt ("why does the cell above
fail?").

The newest cells matter most, so the budget is spent newest first: a cell is kept whole if it
fits, an older one that does not fit is cut to what is left (when that is worth sending) and
the rest are counted in a marker. The text reads oldest first, as the notebook does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bounds import excerpt_lines

__all__ = ["CellRecord", "cells_section"]

#: A cell cut to less than this is left out instead: a few characters of code mislead.
MIN_CELL_CHARS = 200


@dataclass(frozen=True)
class CellRecord:
    """A cell that ran: its number, its code, and (when asked for) what it gave."""

    number: int
    code: str
    #: Its result (``Out[n]``), already described within a budget; None if it had none.
    output: str | None = None
    #: Its error in one line (``ZeroDivisionError: division by zero``); None if it ran.
    error: str | None = None


def _block(cell: CellRecord, code: str) -> str:
    lines = [f"In[{cell.number}]:", "```python", code, "```"]
    if cell.output is not None:
        lines.append(f"Out[{cell.number}]: {cell.output}")
    if cell.error is not None:
        lines.append(f"It failed: {cell.error}")
    return "\n".join(lines)


def cells_section(cells: Sequence[CellRecord], limit: int) -> str:
    """``cells`` (oldest first) as text of at most ``limit`` characters, the newest kept
    first; ``""`` if none fits.

    Examples
    --------
    ::

        In [1]: print(cells_section([CellRecord(3, "x = 1"), CellRecord(4, "x / 0")], 500))
        The cells that ran before this one, oldest first:

        In[3]:
        ```python
        x = 1
        ```

        In[4]:
        ```python
        x / 0
        ```
    """
    head = "The cells that ran before this one, oldest first:"
    room = limit - len(head) - 2
    blocks: list[str] = []
    for cell in reversed(cells):
        block = _block(cell, cell.code)
        # A marker for the cells left out may follow: keep room for it.
        left = room - 60
        if len(block) + 2 > left:
            frame = len(block) - len(cell.code)
            code_room = left - frame - 2
            if code_room >= MIN_CELL_CHARS:
                blocks.append(_block(cell, excerpt_lines(cell.code, code_room)))
            break
        blocks.append(block)
        room -= len(block) + 2
    if not blocks:
        return ""
    left_out = len(cells) - len(blocks)
    parts = [head]
    if left_out:
        parts.append(f"[… {left_out:,} earlier cell{'' if left_out == 1 else 's'} left out …]")
    parts.extend(reversed(blocks))
    return "\n\n".join(parts)
