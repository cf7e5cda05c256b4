"""Code blocks as highlighted HTML: Pygments' token classes, and no colours of our own.

A fenced block becomes ``<div class="highlight"><pre><code class="language-x">`` with a
``<span class="k">`` (keyword), ``"s2"`` (string) ... around each token, the markup Pygments'
``HtmlFormatter`` writes with ``nowrap``. No ``style`` attribute and no stylesheet: JupyterLab
colours ``.highlight`` spans with its theme's variables (the ``jupyterlab_pygments`` rules that
come with nbconvert, which JupyterLab needs), so code follows the light and the dark theme, and
an exported notebook (nbconvert) or GitHub gets the same classes. Where no rule applies the
code stays plain, readable text.

The sanitiser (:mod:`.markdown`) keeps exactly these classes: :data:`TOKEN_CLASSES` on
``span``, :data:`BLOCK_CLASS` on ``div``.
"""

from __future__ import annotations

import functools
import html
from typing import Any

from markdown_it.common.utils import unescapeAll
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES, _TokenType
from pygments.util import ClassNotFound

__all__ = ["BLOCK_CLASS", "TOKEN_CLASSES", "code_block_html", "highlight_code"]

#: The class of the ``div`` around a code block, which JupyterLab's highlighting rules select.
BLOCK_CLASS = "highlight"

#: Every class Pygments' HTML formatter gives a token (``k``, ``nf``, ``s2``, ...).
TOKEN_CLASSES: frozenset[str] = frozenset(name for name in STANDARD_TYPES.values() if name)

#: A code block longer than this is shown escaped but not highlighted. Pygments' lexers are
#: regular expressions, about 0.1 to 1 MB/s, and a live view renders the block being written
#: again at each draw. The limit is the block's own, so a block renders the same wherever it
#: stands (the live view renders blocks one at a time, and must match a whole render).
HIGHLIGHT_LIMIT = 20_000


@functools.lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer | None:
    try:
        # stripnl would drop the block's leading and trailing blank lines, which are the
        # reply's own.
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=512)
def _token_class(token: _TokenType) -> str:
    # A token type without a class of its own takes its parent's, as HtmlFormatter does.
    while token not in STANDARD_TYPES:
        token = token.parent
    return STANDARD_TYPES[token]


def _span(name: str, text: str) -> str:
    # Like HtmlFormatter, no span crosses a line break: each line of a run is wrapped alone.
    if not name:
        return html.escape(text, quote=False)
    lines = html.escape(text, quote=False).split("\n")
    return "\n".join(f'<span class="{name}">{line}</span>' if line else "" for line in lines)


def highlight_code(code: str, language: str) -> str:
    """``code`` as escaped HTML, its tokens in Pygments' ``span`` classes when ``language``
    names a lexer; plain escaped text otherwise.

    The markup is ``HtmlFormatter(nowrap=True)``'s (a ``span`` per run of one class, plain
    text for none), written here at a fraction of its cost.
    """
    lexer = _lexer(language.lower()) if language else None
    if lexer is None or len(code) > HIGHLIGHT_LIMIT:
        return html.escape(code, quote=False)
    parts: list[str] = []
    run_class, run = "", []
    for token, value in lexer.get_tokens(code):
        name = _token_class(token)
        if name != run_class and run:
            parts.append(_span(run_class, "".join(run)))
            run = []
        run_class = name
        run.append(value)
    if run:
        parts.append(_span(run_class, "".join(run)))
    return "".join(parts)


def code_block_html(code: str, language: str = "") -> str:
    """A whole code block: ``<div class="highlight"><pre><code class="language-x">…``.

    The language class stays on ``code``, as markdown-it writes it, for anything that
    recognises it; the ``div`` gives JupyterLab's rules their block (background, spacing).
    """
    escaped = html.escape(language, quote=True)
    attrs = f' class="language-{escaped}"' if language else ""
    body = highlight_code(code, language)
    return f'<div class="{BLOCK_CLASS}"><pre><code{attrs}>{body}</code></pre></div>\n'


def render_fence(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    """markdown-it's render rule for fenced and indented code blocks, highlighted."""
    token = tokens[idx]
    info = unescapeAll(token.info).strip() if token.type == "fence" else ""
    language = info.split(maxsplit=1)[0] if info else ""
    return code_block_html(token.content, language)
