"""aivvm_magic: chat with a language model from a Jupyter notebook.

``%load_ext aivvm_magic`` registers the ``%%aivvm`` cell magic and the ``%aivvm`` line magic.
The provider core (:mod:`aivvm_magic.providers`) and the reference server
(:mod:`aivvm_magic.server`) import neither IPython nor ipywidgets.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Aivvm", "ChatPanel", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%aivvm`` and ``%aivvm`` magics (``%load_ext aivvm_magic``)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what :func:`load_ipython_extension` registered (``%unload_ext aivvm_magic``)."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    # Imported on first use: ``%load_ext`` stays fast (requests, markdown and widgets load
    # with the first cell), and importing the provider core stays free of IPython and widgets.
    if name == "Aivvm":
        from .providers import Aivvm

        return Aivvm
    if name == "ChatPanel":
        from .panel import ChatPanel

        return ChatPanel
    raise AttributeError(f"module 'aivvm_magic' has no attribute {name!r}")
