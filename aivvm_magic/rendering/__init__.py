"""Rendering: turning model output into something a notebook front end shows.

:mod:`aivvm_magic.rendering.markdown` renders and sanitises untrusted text; it needs neither
IPython nor ipywidgets.
"""

from __future__ import annotations

from .markdown import escape_text, render_markdown, render_text, sanitize_html

__all__ = ["escape_text", "render_markdown", "render_text", "sanitize_html"]
