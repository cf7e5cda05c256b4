"""The files our widgets' front end is made of (``static/``), and the stylesheet static outputs
carry with them. No widget library here: the static outputs need none.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["asset", "saved_output_style"]

_STATIC = Path(__file__).with_name("static")


@functools.cache
def asset(name: str) -> str:
    """The text of ``static/name``."""
    return (_STATIC / name).read_text(encoding="utf-8")


def _minified(css: str) -> str:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    return re.sub(r"\s*([{};,])\s*", r"\1", " ".join(css.split())).strip()


@functools.cache
def saved_output_style() -> str:
    """The ``<style>`` a static output carries (``static/saved.css``): the look of code blocks,
    and two rules for the widget beside it, which must never show an error: hidden while it
    cannot be drawn (a saved notebook reopened, a page reloaded), with the static copy hidden
    while it is live. Our own fixed rules, never model text; where styles are stripped (an
    untrusted notebook, GitHub) the widget is not drawn either."""
    return f"<style>{_minified(asset('saved.css'))}</style>"
