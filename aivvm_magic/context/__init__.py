"""What a prompt may carry from the notebook, as bounded text with nothing secret in it.

Each piece turns something of the notebook into text that fits a budget in characters and
says, with a visible marker, what it left out: a value (:mod:`.values`, what ``{name}``
becomes), the last error (:mod:`.tracebacks`), the cells that ran before (:mod:`.cells`).
:mod:`.scrub` takes out anything that looks like a key before that text goes anywhere;
:mod:`.prompt` puts the pieces after the user's question within the model's input limit;
:mod:`.request` keeps the request as it was built, for ``%aivvm last``.

Standard library only, and no IPython: the magics gather what the shell knows and hand it
here. pandas and numpy are used only when the notebook has already imported them.
"""

from __future__ import annotations

from .bounds import cut, excerpt_lines
from .cells import CellRecord, cells_section
from .prompt import ContextPart, add_context
from .request import SentRequest
from .scrub import REDACTED, Scrubber
from .tracebacks import describe_error
from .values import describe, describe_safely

__all__ = [
    "REDACTED",
    "CellRecord",
    "ContextPart",
    "Scrubber",
    "SentRequest",
    "add_context",
    "cells_section",
    "cut",
    "describe",
    "describe_error",
    "describe_safely",
    "excerpt_lines",
]
