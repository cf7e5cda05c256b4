"""The display formats of a reply that are not markdown: ``html``, ``math`` and ``json``.

``%%aivvm -f FORMAT`` says what the reply is, and so how it is shown. ``markdown`` (and
``code``, which is markdown too) and ``text`` are rendered by :mod:`.replies`; this module
holds the others, each as safe HTML for the cell and the extra MIME types its final output
carries:

- ``html``: the reply is HTML, cleaned by the allowlist every reply goes through
  (:func:`~aivvm_magic.rendering.markdown.sanitize_html`): what the allowlist does not know is
  dropped, its text kept, and nothing runs or loads.
- ``math``: the reply is LaTeX, for the frontend to typeset. The output carries it as
  ``text/latex`` (nbconvert's LaTeX and PDF exports use it) and as escaped text in
  ``text/html``, which JupyterLab typesets with MathJax as it does any HTML output, while
  GitHub, nbviewer without MathJax and plain-text frontends show the LaTeX source. A reply with
  no math delimiters is one formula, shown as display math.
- ``json``: the reply is a JSON value (on its own, or as the one fenced code block the reply
  is); shown pretty-printed, and ``-o VAR`` receives the parsed value. A reply that is not
  JSON is an error that says where it stopped being JSON, and its text is shown as it came.

While a reply streams, ``html`` is cleaned as it grows, and ``math`` and ``json`` show their
text as it comes; the final output is drawn once the reply is whole.

Examples
--------
::

    In [1]: parse_json_reply('```json\\n{"a": [1, 2]}\\n```')
    Out[1]: {'a': [1, 2]}
    In [2]: math_source(r"e^{i\\pi} + 1 = 0")
    Out[2]: '$$e^{i\\\\pi} + 1 = 0$$'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .markdown import escape_text, render_text, sanitize_html

__all__ = [
    "MARKDOWN_FORMATS",
    "NotJSON",
    "format_mimetypes",
    "json_html",
    "math_html",
    "math_source",
    "parse_json_reply",
    "render_format",
    "unfenced",
]

#: The formats rendered as markdown (``code`` is markdown whose first code block also goes
#: into a new cell).
MARKDOWN_FORMATS = ("markdown", "code")

# The whole text one fenced code block, with any info string: group 2 is its body.
_ONE_FENCE = re.compile(r"\s*(`{3,}|~{3,})[^\n`]*\n(.*?)\n?\1[ \t]*\s*", re.DOTALL)


def unfenced(text: str) -> str:
    """The body of ``text`` when it is one fenced code block and nothing else; else ``text``."""
    match = _ONE_FENCE.fullmatch(text)
    if match is None:
        return text
    fence, body = match.groups()
    # A line inside that would close the fence makes two blocks, not one (CommonMark: the
    # fence's character, at least as many, nothing else on the line).
    closing = re.compile(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
    if any(closing.fullmatch(line) for line in body.splitlines()):
        return text
    return body


# ---------------------------------------------------------------------------------- json


class NotJSON(ValueError):
    """A reply asked for as JSON (``-f json``) is not JSON; the cell shows its text and says
    where it stopped being JSON."""


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which no JSON parser elsewhere does.
    raise ValueError(f"{name} is not a JSON value")


def parse_json_reply(text: str) -> Any:
    """The JSON value ``text`` is (on its own, or as one fenced code block); :class:`NotJSON`
    saying why not, in one line."""
    body = unfenced(text)
    if not body.strip():
        raise NotJSON("the reply is not JSON: it is empty")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"the reply is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise NotJSON("the reply is not JSON this parser can read: nested too deeply") from None
    except ValueError as exc:
        raise NotJSON(f"the reply is not JSON: {exc}") from None


def _pretty_json(text: str) -> str | None:
    try:
        value = parse_json_reply(text)
    except NotJSON:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def json_html(text: str) -> str:
    """The reply pretty-printed when it is JSON, else as the text it is (still arriving, or
    not JSON)."""
    pretty = _pretty_json(text)
    if pretty is None:
        return render_text(text)
    return f'<pre><code class="language-json">{escape_text(pretty)}</code></pre>'


# ---------------------------------------------------------------------------------- math

# Anything MathJax (and LaTeX) reads as the start of math: $$, \[, \(, an environment, or an
# inline $...$ whose first character is not a space (as in "$x$", not "costs $5 and $6").
_MATH_DELIMITER = re.compile(r"\$\$|\\\[|\\\(|\\begin\{|\$[^\s$][^$]*\$")


def math_source(text: str) -> str:
    """The reply as LaTeX to typeset: without a fence around it, and when it has no math
    delimiters, as one display formula (``$$...$$``)."""
    body = unfenced(text).strip()
    if _MATH_DELIMITER.search(body):
        return body
    return f"$${body}$$"


def math_html(text: str) -> str:
    """The LaTeX of the reply as escaped text, a paragraph per blank-line-separated block,
    for the frontend's MathJax to typeset (MathJax leaves ``<pre>`` and ``<code>`` alone, so
    it is in neither)."""
    blocks = [block for block in re.split(r"\n[ \t]*\n", math_source(text)) if block.strip()]
    return "".join(f'<p class="aivvm-math">{escape_text(block)}</p>' for block in blocks)


# ------------------------------------------------------------------------------ dispatch

_RENDERERS: dict[str, Callable[[str], str]] = {
    "html": sanitize_html,
    "math": math_html,
    "json": json_html,
}


def render_format(text: str, fmt: str) -> str | None:
    """Safe HTML for ``text`` in format ``fmt``, for the formats this module renders; None for
    the others (markdown, code and text)."""
    render = _RENDERERS.get(fmt)
    return render(text) if render is not None else None


def format_mimetypes(text: str, fmt: str) -> dict[str, str]:
    """What a finished reply's output carries besides its HTML: the LaTeX of a ``math``
    reply, the pretty-printed ``text/plain`` of a ``json`` one."""
    if fmt == "math":
        return {"text/latex": math_source(text)}
    if fmt == "json":
        pretty = _pretty_json(text)
        return {"text/plain": pretty} if pretty is not None else {}
    return {}
