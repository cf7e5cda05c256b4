"""Rendering: turning model output into something a notebook front end shows.

:mod:`aivvm_magic.rendering.markdown` renders and sanitises untrusted text; it needs neither
IPython nor ipywidgets.

The names below are looked up on first use (PEP 562): the session imports the render loop
from this package at ``%load_ext``, and that must not load markdown-it, nh3 and Pygments,
which only the first reply needs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["escape_text", "render_markdown", "render_text", "sanitize_html"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import markdown

        return getattr(markdown, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
