"""A reply as safe HTML: whole, while it streams, and the status line under it.

Shared by the cells' output and the chat panel, so a reply looks the same in both. Every
function returns sanitised HTML (see :mod:`.markdown`): plain tags and classes only, no
``<style>`` or style attributes, which GitHub, nbviewer and an untrusted notebook strip anyway.
"""

from __future__ import annotations

import html

from ..token_usage import TokenUsage
from .assets import saved_output_style
from .formats import MARKDOWN_FORMATS, render_format
from .highlight import BLOCK_CLASS
from .incremental import MarkdownStream, plain_tail, table_head_start
from .markdown import render_markdown, render_text

__all__ = [
    "LIVE_MARKDOWN_LIMIT",
    "LIVE_TAIL",
    "MARKDOWN_LIMIT",
    "format_status",
    "live_reply_html",
    "render_live",
    "render_reply",
    "reply_html",
    "status_html",
]

#: Markdown costs about a second per megabyte to render: longer replies are shown as plain
#: text in the final output. While streaming, the live view shows at most about this much of
#: the reply's end, so each update stays small however long the reply grows.
MARKDOWN_LIMIT = 1_000_000
LIVE_MARKDOWN_LIMIT = 100_000
LIVE_TAIL = 20_000


def render_reply(text: str, fmt: str) -> str:
    """Safe HTML for ``text`` in the display format ``fmt`` (``markdown``, ``text``, ``code``,
    or one of :mod:`.formats`: ``html``, ``math``, ``json``)."""
    if fmt == "text" or len(text) > MARKDOWN_LIMIT:
        return render_text(text)
    formatted = render_format(text, fmt)
    return formatted if formatted is not None else render_markdown(text)


def render_live(text: str, fmt: str) -> str:
    """Safe HTML for a live view rendered from scratch: the whole reply, or for a long one its
    last part only. A view that keeps a :class:`MarkdownStream` renders incrementally instead."""
    if len(text) <= LIVE_MARKDOWN_LIMIT:
        return render_reply(text, fmt)
    return plain_tail(text, LIVE_TAIL)


def live_reply_html(text: str, fmt: str, markdown: MarkdownStream | None) -> str:
    """Safe HTML for the live view of a reply still arriving: markdown rendered by the reply's
    own ``markdown`` stream (only its unfinished block again), or for a format other than
    markdown, a reply over ``MARKDOWN_LIMIT`` or no stream, :func:`render_live`.

    A table's header row waits for its delimiter row (:func:`table_head_start`): until then
    markdown has no table, only a line of pipes that would flash up and be redrawn.
    """
    if markdown is not None and fmt in MARKDOWN_FORMATS and len(text) <= MARKDOWN_LIMIT:
        head = table_head_start(text)
        # The stream's text may only grow: a row already shown is not taken back.
        if head is not None and head >= markdown.seen_chars:
            text = text[:head]
        return markdown.live(text, budget=LIVE_MARKDOWN_LIMIT)
    return render_live(text, fmt)


def format_status(
    *,
    model: str,
    target: str,
    elapsed: float,
    chars: int,
    state: str,
    note: str = "",
    usage: TokenUsage | None = None,
) -> str:
    """The one-line status under a reply: model, target, elapsed time, characters, the tokens
    where the server counted them, state."""
    tokens = usage.summary() if usage is not None else ""
    parts = [model, target, f"{elapsed:.1f} s", f"{chars:,} chars", tokens]
    line = " · ".join(p for p in parts if p)
    if state:
        line = f"{state} · {line}"
    if note:
        line = f"{line} · {note}"
    return line


def status_html(line: str, *, warn: bool = False) -> str:
    """A status line as HTML, marked ⚠ when ``warn``; shared by the cells and the panel."""
    mark = "⚠ " if warn else ""
    return f'<div class="aivvm-status"><small>{mark}{html.escape(line)}</small></div>'


def reply_html(body: str, status: str, *, warn: bool = False, saved: bool = False) -> str:
    """A reply's HTML ``body`` with its ``status`` line under it, as a cell shows them.

    ``saved``: the static output a notebook keeps. A reply with code blocks then carries the
    stylesheet that gives them their look (and hides its code tools when they cannot be
    drawn), :func:`~aivvm_magic.rendering.assets.saved_output_style`.
    """
    classes, style = "aivvm-reply", ""
    if saved and f'<div class="{BLOCK_CLASS}">' in body:
        classes, style = "aivvm-reply aivvm-has-code", saved_output_style()
    return f'{style}<div class="{classes}">{body}</div>{status_html(status, warn=warn)}'
