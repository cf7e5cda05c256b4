"""Teach nbval (0.11) about display updates, so the tutorial notebooks compare what they show.

``%%aivvm`` first displays a live widget, then replaces it with the finished reply through an
``update_display_data`` message (``display(..., display_id=True)`` and ``handle.update``).
JupyterLab and nbclient apply such updates, so the notebooks are saved with the finished
reply; nbval 0.11 does not (its cell loop prints "unhandled iopub msg" and drops them), so it
would compare the stored reply with the widget's placeholder and fail every ``%%aivvm`` cell.

The fix wraps the one method nbval reads iopub messages through: each display output is kept
by its display id, an update rewrites the kept outputs in place, and the update itself is not
handed to nbval. nbval compares a cell's outputs as soon as the cell has run, so a notebook
must not change an earlier cell's output: a chat panel shown before further turns of its
conversation would be compared as it was then, but stored as it was at the end. The tutorials
show each panel after the last turn of its conversation.

What nbval 0.11 handles by itself: it leaves ``application/vnd.jupyter.widget-view+json`` out
of the comparison (model ids are random), so a chat panel is compared through the static
``text/plain`` and ``text/html`` transcript beside its widget view; and a cell tagged
``raises-exception`` may fail, with its error's name and message compared (not the traceback).
Volatile text (ports, times, temporary paths) is replaced as ``nbval_sanitize.cfg`` says.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

import nbformat

try:
    from nbval.plugin import IPyNbFile
except ImportError:  # nbval not installed: nothing to patch, and --nbval is unavailable anyway
    IPyNbFile = None

_DISPLAYS = ("display_data", "execute_result")

# These would change what the notebooks show (another server, model, key or provider, another
# local model file); the stored outputs were made without them.
_SETTINGS_FROM_ENV = (
    "AIVVM_BASE_URL",
    "AIVVM_MODEL",
    "AIVVM_API_KEY",
    "AIVVM_PROVIDER",
    "AIVVM_LOCAL_MODEL",
    "AIVVM_HISTORY",
    "AIVVM_HISTORY_PATH",
    "AIVVM_REPLAY_MODE",
)
# The notebooks' kernels keep Jupyter's data (their turns' history among it) here, never
# where the person running the tests keeps theirs; AivvmMagics.history_path stays at its
# default, as the stored outputs of %config AivvmMagics show it.
_DATA_DIR = tempfile.mkdtemp(prefix="aivvm-nbval-data-")
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)


def _track_display_updates(nbfile: Any) -> None:
    """Wrap ``nbfile.get_kernel_message`` so that display updates reach the outputs."""
    read = nbfile.get_kernel_message
    # display id -> the data and metadata dicts of every output shown with that id.
    shown: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}

    def get_kernel_message(timeout: float | None = None, stream: str = "iopub") -> Any:
        while True:
            msg = read(timeout=timeout, stream=stream)
            kind = msg["msg_type"]
            content = msg.get("content", {})
            display_id = content.get("transient", {}).get("display_id")
            if kind in _DISPLAYS and display_id:
                # nbval stores content["data"] in its output node; a NotebookNode is stored
                # as is (a plain dict would be copied), so an update made here shows there.
                content["data"] = nbformat.from_dict(content.get("data", {}))
                content["metadata"] = nbformat.from_dict(content.get("metadata", {}))
                shown.setdefault(display_id, []).append((content["data"], content["metadata"]))
            elif kind == "update_display_data":
                for data, metadata in shown.get(display_id, ()):
                    data.clear()
                    data.update(content.get("data", {}))
                    metadata.clear()
                    metadata.update(content.get("metadata", {}))
                continue
            return msg

    nbfile.get_kernel_message = get_kernel_message


if IPyNbFile is not None:
    _setup = IPyNbFile.setup

    def _setup_tracking_updates(self: Any) -> None:
        # The kernel that setup starts inherits this process's environment.
        for name in _SETTINGS_FROM_ENV:
            os.environ.pop(name, None)
        os.environ["JUPYTER_DATA_DIR"] = _DATA_DIR
        _setup(self)
        _track_display_updates(self)

    IPyNbFile.setup = _setup_tracking_updates
