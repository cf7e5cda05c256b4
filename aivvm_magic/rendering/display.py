"""The live view of a streaming reply in a cell's output, and its static form once done.

Chunks can arrive thousands of times a second. Sending the whole rendered text per chunk costs
quadratic bytes, and jupyter_server drops iopub messages above 1000 a second, so updates are
coalesced: ``append`` only stores the chunk, and a small flusher thread pushes at most about 20
updates a second (fewer when rendering itself gets expensive), plus a final one. When the reply
ends, the widget is replaced by a static ``text/plain`` + sanitised ``text/html`` bundle, so a
saved notebook shows the reply anywhere, with or without a kernel or widget state.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .markdown import render_markdown, render_text

#: Shortest gap between two live updates, in seconds (about 20 updates a second).
MIN_INTERVAL = 0.05
#: How often the status line ticks while nothing new arrives (elapsed time, waiting dots).
TICK = 0.5


#: Markdown costs about a second per megabyte to render: longer replies are shown as plain
#: text in the final output, and while streaming only their tail is shown.
MARKDOWN_LIMIT = 1_000_000
LIVE_MARKDOWN_LIMIT = 100_000
LIVE_TAIL = 20_000


def render_reply(text: str, fmt: str) -> str:
    """Safe HTML for ``text`` in the display format ``fmt`` (``markdown``, ``text``, ``code``)."""
    if fmt == "text" or len(text) > MARKDOWN_LIMIT:
        return render_text(text)
    return render_markdown(text)


def render_live(text: str, fmt: str) -> str:
    """Safe HTML for the live view: the whole reply, or for a long one its last part only,
    so each update stays small however long the reply grows."""
    if len(text) <= LIVE_MARKDOWN_LIMIT:
        return render_reply(text, fmt)
    note = f"… {len(text) - LIVE_TAIL:,} characters above; the whole reply appears when done"
    return f"<p><em>{html.escape(note)}</em></p>{render_text(text[-LIVE_TAIL:])}"


def format_status(
    *, model: str, target: str, elapsed: float, chars: int, state: str, note: str = ""
) -> str:
    """The one-line status under a reply: model, target, elapsed time, characters, state."""
    parts = [model, target, f"{elapsed:.1f} s", f"{chars:,} chars"]
    line = " · ".join(p for p in parts if p)
    if state:
        line = f"{state} · {line}"
    if note:
        line = f"{line} · {note}"
    return line


def _wrap(reply_html: str, status: str, *, warn: bool = False) -> str:
    # Plain tags and classes only: no <style> or style attributes, which sanitisers (GitHub,
    # nbviewer, an untrusted notebook) strip anyway, so the output looks the same everywhere.
    mark = "⚠ " if warn else ""
    return (
        f'<div class="aivvm-reply">{reply_html}</div>'
        f'<div class="aivvm-status"><small>{mark}{html.escape(status)}</small></div>'
    )


class StreamingDisplay:
    """Shows a reply as it streams: an updating widget in a kernel, plain prints elsewhere.

    Use ``start()``, then ``append(chunk)`` per chunk (cheap: no rendering on this path), then
    ``finish(...)`` exactly once. ``notice(text)`` shows a transient note (a retry, say).
    """

    def __init__(
        self,
        *,
        model: str,
        target: str,
        fmt: str = "markdown",
        mode: str = "widget",
        stream: TextIO | None = None,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.target = target
        self.fmt = fmt
        self.mode = mode
        self.updates = 0
        self._stream = stream or sys.stdout
        self._min_interval = min_interval
        self._clock = clock
        self._parts: list[str] = []
        self._chars = 0
        self._text_cache = ""
        self._notice = ""
        self._started = clock()
        self._first_chunk: float | None = None
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._widget: Any = None

    # -- the streaming path -------------------------------------------------------------

    def start(self) -> None:
        """Show the (empty) reply with a waiting status line."""
        self._started = self._clock()
        if self.mode != "widget":
            return
        import ipywidgets as widgets
        from IPython.display import display

        # One HTML widget for reply and status: one comm message per update, not two.
        self._widget = widgets.HTML(value=self._live_html("", "waiting…"))
        self._widget.add_class("aivvm-stream")
        self._handle = display(self._widget, display_id=True)
        self._thread = threading.Thread(target=self._flusher, name="aivvm-display", daemon=True)
        self._thread.start()

    def append(self, chunk: str) -> None:
        """Add a chunk of the reply; shown by the next coalesced update."""
        if self._first_chunk is None:
            self._first_chunk = self._clock()
        # Only this thread appends; list.append is atomic, and the flusher reads a copy.
        self._parts.append(chunk)
        self._chars += len(chunk)
        if self.mode == "widget":
            # Setting an Event takes its lock and wakes waiters: only do it when it is clear.
            if not self._dirty.is_set():
                self._dirty.set()
        else:
            self._stream.write(chunk)
            self._stream.flush()

    def notice(self, text: str) -> None:
        """Show ``text`` in the status line until the next chunk arrives."""
        self._notice = text
        if self.mode == "widget":
            self._dirty.set()
        else:
            self._stream.write(f"[{text}]\n")
            self._stream.flush()

    @property
    def text(self) -> str:
        """Everything appended so far."""
        return "".join(self._parts[:])

    # -- the end ------------------------------------------------------------------------

    def finish(self, *, complete: bool, note: str = "") -> None:
        """Stop live updates and leave the final static bundle in the output.

        ``complete=False`` marks the reply as partial; ``note`` says why (shown in the status).
        """
        self._stopped.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        text = self.text
        elapsed = self._clock() - self._started
        state = "" if complete else ("incomplete" if text else "failed")
        status = format_status(
            model=self.model,
            target=self.target,
            elapsed=elapsed,
            chars=len(text),
            state=state,
            note=note,
        )
        if self.mode != "widget":
            if text and not text.endswith("\n"):
                self._stream.write("\n")
            if not complete:
                self._stream.write(f"[{status}]\n")
            self._stream.flush()
            return
        plain = text if complete else f"{text}\n[{status}]"
        bundle = {"text/plain": plain}
        # A reply too long for markdown is shown by the frontend's own plain-text renderer;
        # an HTML copy would only double the size of the notebook.
        if len(text) <= MARKDOWN_LIMIT:
            bundle["text/html"] = self._final_html(text, status, complete)
        elif complete:
            bundle["text/plain"] = f"{text}\n[{status}]"
        self._handle.update(bundle, raw=True)
        self.updates += 1
        # The live widget is no longer shown; closing it frees its comm in the kernel and
        # in the frontend, so a long session does not pile up dead widget models.
        # Its layout and style are widget models of their own: close them too.
        for model in (self._widget, self._widget.layout, self._widget.style):
            model.close()

    def _final_html(self, text: str, status: str, complete: bool) -> str:
        return _wrap(render_reply(text, self.fmt), status, warn=not complete)

    # -- the flusher thread -------------------------------------------------------------

    def _live_html(self, reply_html: str, state: str) -> str:
        elapsed = self._clock() - self._started
        line = format_status(
            model=self.model,
            target=self.target,
            elapsed=elapsed,
            chars=self._chars,
            state=state,
            note=self._notice,
        )
        return _wrap(reply_html, line)

    def _flusher(self) -> None:
        reply_html = ""
        shown_chars = 0
        while not self._stopped.is_set():
            # While waiting for the first chunk (or showing a notice) the status line ticks;
            # once text flows, only new text causes an update.
            ticking = self._first_chunk is None or bool(self._notice)
            if not self._dirty.wait(TICK) and not ticking:
                continue
            if self._stopped.is_set():
                break
            self._dirty.clear()
            began = self._clock()
            try:
                if self._chars != shown_chars:
                    shown_chars = self._chars
                    reply_html = render_live(self.text, self.fmt)
                    self._notice = ""
                state = "waiting…" if self._first_chunk is None else "streaming…"
                self._widget.value = self._live_html(reply_html, state)
            except Exception:  # noqa: BLE001 - a closed comm must not break the stream
                break
            self.updates += 1
            cost = self._clock() - began
            # Keep rendering to a fraction of the time, however long the reply grows.
            self._stopped.wait(max(self._min_interval, 3 * cost))
