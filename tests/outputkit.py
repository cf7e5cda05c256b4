"""A cell's final output as a kernel would publish it, from a plain ``InteractiveShell``.

The cell runs in widget mode without streaming: the final bundle goes out through
``IPython.display`` with its metadata, as in a kernel, and ``capture_output`` keeps it.
"""

from __future__ import annotations

from typing import Any

from IPython.utils.capture import RichOutput, capture_output

from aivvm_magic.errors import AivvmError
from aivvm_magic.magics import magics_for


def final_output(ip: Any, line: str, cell: str) -> tuple[RichOutput, AivvmError | None]:
    """The last output of the ``%%aivvm`` cell (its final bundle), and the error it raised."""
    magics_for(ip).display_mode = "widget"
    error = None
    with capture_output() as captured:
        try:
            ip.run_cell_magic("aivvm", f"--no-stream {line}", cell)
        except AivvmError as exc:
            error = exc
    return captured.outputs[-1], error
