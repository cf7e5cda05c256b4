"""A conversation as a transcript: plain functions, as text and as sanitised HTML.

The chat panel shows the HTML (and keeps it as its static output for saved notebooks);
``%aivvm history`` prints the text. Each reply is rendered exactly as in a cell
(:mod:`.replies`); prompts are shown as typed, never as markdown.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..conversation import PendingReply, Turn
from .assets import saved_output_style
from .incremental import MarkdownStream
from .markdown import escape_text
from .replies import live_reply_html, render_reply, status_html

__all__ = [
    "EMPTY_HTML",
    "exchange_html",
    "live_exchange_html",
    "message_html",
    "transcript_html",
    "transcript_text",
    "turn_html",
    "turns_text",
]

#: What an empty transcript shows.
EMPTY_HTML = '<div class="aivvm-empty"><small>No messages yet.</small></div>'


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def incomplete_mark(turn: Turn) -> str:
    """What marks a partial turn, e.g. ``incomplete: stopped``; "" for a complete one."""
    return "" if turn.complete else f"incomplete: {turn.error or 'cut short'}"


def turns_text(turns: Sequence[Turn]) -> str:
    """The turns as numbered plain text, with each turn's model and start time, and the
    tokens of each reply where the server counted them."""
    parts = []
    for number, turn in enumerate(turns, 1):
        mark = incomplete_mark(turn)
        mark = f" [{mark}]" if mark else ""
        tokens = turn.usage.summary()
        tokens = f" ({tokens})" if tokens else ""
        parts.append(
            f"[{number}] You ({turn.model}, {turn.started}):\n{turn.prompt}\n\n"
            f"[{number}] Assistant{tokens}{mark}:\n{turn.reply}\n\n"
        )
    return "".join(parts)


def transcript_text(name: str, turns: Sequence[Turn]) -> str:
    """Conversation ``name`` as plain text: a heading, then :func:`turns_text`."""
    return f"Conversation {name!r}, {_count(len(turns), 'turn')}\n\n{turns_text(turns)}".rstrip()


def message_html(text: str) -> str:
    """What the user typed, as typed: escaped, one ``<p>`` per paragraph, ``<br>`` per line.

    Plain text in the page's own font (not ``<pre>``): nothing in it is interpreted.
    """
    paragraphs = [part for part in text.strip("\n").split("\n\n") if part.strip("\n")]
    return "".join(
        "<p>" + "<br>".join(escape_text(line) for line in part.strip("\n").split("\n")) + "</p>"
        for part in paragraphs or [""]
    )


def exchange_html(
    prompt: str, source: str, reply_html: str, *, mark: str = "", live: bool = False
) -> str:
    """One prompt and its reply; ``mark`` is a short line under the reply.

    The user's message is a quotation under "You" (a bubble in the live panel), the reply the
    page's own text under "Assistant": told apart at a glance, with or without the panel's
    stylesheet.
    """
    who = "You" if source == "panel" else "You, in a cell"
    live_class = " aivvm-live" if live else ""
    mark_html = status_html(mark) if mark else ""
    return (
        f'<div class="aivvm-turn"><div class="aivvm-prompt">'
        f'<p class="aivvm-who"><strong>{who}</strong></p>'
        f"<blockquote>{message_html(prompt)}</blockquote></div>"
        f'<div class="aivvm-answer"><p class="aivvm-who"><strong>Assistant</strong></p>'
        f'<div class="aivvm-reply{live_class}">{reply_html}</div>{mark_html}</div></div>'
    )


def turn_html(turn: Turn, fmt: str = "markdown") -> str:
    """A recorded turn; a partial one is marked ``⚠ incomplete: <reason>``."""
    mark = incomplete_mark(turn)
    return exchange_html(
        turn.prompt, turn.source, render_reply(turn.reply, fmt), mark=f"⚠ {mark}" if mark else ""
    )


def live_exchange_html(
    pending: PendingReply, fmt: str, markdown: MarkdownStream | None
) -> tuple[str, int]:
    """A reply still streaming, with its prompt, and how many characters it has so far.

    Its state ("streaming…") is the status line's to say, once; before the first words the
    reply shows an ellipsis.
    """
    text = pending.text
    body = live_reply_html(text, fmt, markdown) if text else "<p>…</p>"
    return exchange_html(pending.prompt, pending.source, body, live=True), len(text)


def transcript_html(body: str, title: str = "", *, saved: bool = False) -> str:
    """The turns' HTML (``body``) as a transcript, under ``title`` if one is given.

    ``saved``: the static copy a notebook keeps beside a live panel, with the stylesheet that
    shows it only where the panel cannot be drawn
    (:func:`~aivvm_magic.rendering.assets.saved_output_style`).
    """
    # Plain tags and classes: GitHub, nbviewer and untrusted notebooks strip styles, and the
    # transcript reads the same there.
    heading = status_html(title) if title else ""
    if saved:
        return (
            f'{saved_output_style()}<div class="aivvm-transcript aivvm-static-copy">'
            f"{heading}{body or EMPTY_HTML}</div>"
        )
    return f'<div class="aivvm-transcript">{heading}{body or EMPTY_HTML}</div>'
