"""The live view of a streaming reply in a cell's output, and its static form once done.

Chunks can arrive tens of thousands of times a second. Sending the whole rendered text per chunk
costs quadratic bytes, and jupyter_server drops iopub messages above 1000 a second, so updates
are coalesced: a chunk is only appended to a list (no Python call of ours at all, see
:attr:`StreamingDisplay.sink`), and a small flusher thread looks at that list at most about 20
times a second (less often when an update gets expensive, see :data:`DISPLAY_SHARE`) and
pushes an update when it grew. Markdown is rendered incrementally (:mod:`.incremental`), so an
update near the end of a long reply costs what one near its start does. When the reply ends,
the widget is replaced by a static ``text/plain`` + sanitised ``text/html`` bundle, so a saved
notebook shows the reply anywhere, with or without a kernel or widget state.

The live widgets are pooled: the widget freed when one reply ends shows the next one, so a
cell does not pay for opening (and closing) three widget models in the frontend.
"""

from __future__ import annotations

import contextvars
import html
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .incremental import MarkdownStream, plain_tail
from .markdown import render_markdown, render_text

#: Shortest gap between two live updates, in seconds (about 20 updates a second).
MIN_INTERVAL = 0.05
#: The share of the time the live view may take. An update is timed by the clock, so it counts
#: what it cost the cell: while the kernel is busy taking in a reply faster than anyone reads
#: (tens of thousands of chunks a second), the update waits for the interpreter's lock each
#: time it hands it over, and that slows the reply down. Such an update is followed by a
#: longer pause; at the pace of a model's tokens an update takes about a millisecond and the
#: rate stays at ``1 / MIN_INTERVAL``.
DISPLAY_SHARE = 0.05
#: How often the status line ticks while nothing new arrives (elapsed time, waiting dots).
TICK = 0.5
#: How often the flusher looks for the first chunk: it shows within this long of arriving.
FIRST_CHUNK_POLL = 0.01

#: Markdown costs about a second per megabyte to render: longer replies are shown as plain
#: text in the final output. While streaming, the live view shows at most about this much of
#: the reply's end, so each update stays small however long the reply grows.
MARKDOWN_LIMIT = 1_000_000
LIVE_MARKDOWN_LIMIT = 100_000
LIVE_TAIL = 20_000

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def render_reply(text: str, fmt: str) -> str:
    """Safe HTML for ``text`` in the display format ``fmt`` (``markdown``, ``text``, ``code``)."""
    if fmt == "text" or len(text) > MARKDOWN_LIMIT:
        return render_text(text)
    return render_markdown(text)


def render_live(text: str, fmt: str) -> str:
    """Safe HTML for a live view rendered from scratch: the whole reply, or for a long one its
    last part only. :class:`StreamingDisplay` renders markdown incrementally instead."""
    if len(text) <= LIVE_MARKDOWN_LIMIT:
        return render_reply(text, fmt)
    return plain_tail(text, LIVE_TAIL)


def live_reply_html(text: str, fmt: str, markdown: MarkdownStream | None) -> str:
    """Safe HTML for the live view of a reply still arriving: markdown rendered by the reply's
    own ``markdown`` stream (only its unfinished block again), or for the plain-text format, a
    reply over ``MARKDOWN_LIMIT`` or no stream, :func:`render_live`."""
    if markdown is not None and fmt != "text" and len(text) <= MARKDOWN_LIMIT:
        return markdown.live(text, budget=LIVE_MARKDOWN_LIMIT)
    return render_live(text, fmt)


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


def status_html(line: str, *, warn: bool = False) -> str:
    """A status line as HTML, marked ⚠ when ``warn``; shared by the cells and the panel."""
    # Plain tags and classes only: no <style> or style attributes, which sanitisers (GitHub,
    # nbviewer, an untrusted notebook) strip anyway, so the output looks the same everywhere.
    mark = "⚠ " if warn else ""
    return f'<div class="aivvm-status"><small>{mark}{html.escape(line)}</small></div>'


def _wrap(reply_html: str, status: str, *, warn: bool = False) -> str:
    return f'<div class="aivvm-reply">{reply_html}</div>{status_html(status, warn=warn)}'


def close_widget(widget: Any) -> None:
    """Close ``widget`` and the layout and style models it owns, freeing their comms."""
    for model in (widget, widget.layout, widget.style):
        model.close()


class _WidgetPool:
    """Live HTML widgets waiting for their next reply.

    A widget whose reply ended is cleared (so no saved widget state holds an old reply) and
    kept; the next reply shows it again in its own cell. Opening a fresh ``HTML`` widget costs
    three comm models (the widget, its layout, its style) opened now and closed later, each a
    message to the frontend and back.
    """

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def take(self) -> Any:
        """An open live widget, reused if one is idle."""
        with self._lock:
            while self._idle:
                widget = self._idle.pop()
                if widget.comm is not None:  # not closed meanwhile (Widget.close_all, say)
                    return widget
        import ipywidgets as widgets

        widget = widgets.HTML()
        widget.add_class("aivvm-stream")
        return widget

    def give_back(self, widget: Any) -> None:
        """Clear ``widget``, whose view is gone, and keep it for the next reply."""
        if widget.comm is None:
            return
        widget.value = ""
        with self._lock:
            self._idle.append(widget)

    def close(self) -> None:
        """Close the idle widgets (when the extension is unloaded)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for widget in idle:
            close_widget(widget)

    def __len__(self) -> int:
        return len(self._idle)


#: The live widgets of this kernel, shared by every ``StreamingDisplay``.
widget_pool = _WidgetPool()


class StreamingDisplay:
    """Shows a reply as it streams: an updating widget in a kernel, plain prints elsewhere.

    Use ``start()``, then ``sink(chunk)`` (or ``append(chunk)``) per chunk, then
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
        # The text of the first ``_joined_count`` parts, kept by the flusher (and by finish,
        # once the flusher ended): each update joins only the chunks that are new.
        self._joined = ""
        self._joined_count = 0
        self._notice = ""
        self._started = clock()
        self._markdown = MarkdownStream() if fmt != "text" else None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._show_lock = threading.Lock()
        self._widget: Any = None

    # -- the streaming path -------------------------------------------------------------

    def start(self) -> None:
        """Show the (empty) reply with a waiting status line, and start the live updates.

        The widget is shown by the flusher thread, while this thread goes on to send the
        request: showing it costs two stdout/stderr flush round trips in ipykernel, which a
        fast reply would otherwise wait for.
        """
        self._started = self._clock()
        if self.mode != "widget":
            return
        self._widget = widget_pool.take()
        # The thread runs in this cell's context, where ipykernel keeps the parent header that
        # routes its messages to this cell's output.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._flusher,), name="aivvm-display", daemon=True
        )
        self._thread.start()

    def _show(self) -> None:
        """Display the live widget (on the flusher thread), unless ``finish`` came first."""
        from IPython.display import display

        # The bundle is built here rather than by the widget's own repr, which would format
        # every trait; the plain text is what a frontend without widgets shows meanwhile.
        view = {"version_major": 2, "version_minor": 0, "model_id": self._widget.model_id}
        bundle = {"text/plain": "aivvm: reply streaming…", WIDGET_VIEW: view}
        with self._show_lock:
            if self._handle is None and not self._stopped.is_set():
                self._handle = display(bundle, raw=True, display_id=True)

    @property
    def sink(self) -> Callable[[str], None]:
        """The cheapest callable that takes the next chunk.

        With the widget it is the ``append`` of the list the flusher reads, so a fast stream
        of small chunks pays nothing of ours per chunk; in a terminal it prints the chunk.
        """
        return self._parts.append if self.mode == "widget" else self.append

    def append(self, chunk: str) -> None:
        """Add a chunk of the reply; shown by the next coalesced update."""
        # Only this thread appends; list.append is atomic, and the flusher reads a copy.
        self._parts.append(chunk)
        if self.mode != "widget":
            self._stream.write(chunk)
            self._stream.flush()

    def notice(self, text: str) -> None:
        """Show ``text`` in the status line until the next chunk arrives."""
        self._notice = text
        if self.mode == "widget":
            self._wake.set()
        else:
            self._stream.write(f"[{text}]\n")
            self._stream.flush()

    @property
    def text(self) -> str:
        """Everything appended so far."""
        return "".join(self._parts[:])

    # -- the end ------------------------------------------------------------------------

    def finish(self, *, complete: bool, note: str = "", text: str | None = None) -> None:
        """Stop live updates and leave the final static bundle in the output.

        ``complete=False`` marks the reply as partial; ``note`` says why (shown in the status).
        ``text`` is the whole reply when the caller holds it already, the same text as the
        chunks add up to: then a long reply is not held twice while the bundle is sent.
        """
        self._stopped.set()
        self._wake.set()
        stuck = False
        if self._thread is not None:
            self._thread.join(timeout=5)
            # Still rendering a huge reply: leave it its own renderer and widget.
            stuck = self._thread.is_alive()
            if stuck:
                self._markdown = None
        if text is None:
            text = self.text if stuck else self._text_through(len(self._parts))
        elif not stuck:
            # The flusher is done with them: only the caller's copy stays.
            self._parts, self._joined, self._joined_count = [], "", 0
        elapsed = self._clock() - self._started
        if complete:
            # A server may well answer 200 with nothing: say so rather than show nothing.
            state = "" if text else "empty reply"
        else:
            state = "incomplete" if text else "failed"
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
            if not complete or note or not text:
                self._stream.write(f"[{status}]\n")
            self._stream.flush()
            return
        plain = text if complete else f"{text}\n[{status}]"
        bundle = {"text/plain": plain}
        # A reply too long for markdown is shown by the frontend's own plain-text renderer;
        # an HTML copy would only double the size of the notebook.
        if len(text) <= MARKDOWN_LIMIT:
            bundle["text/html"] = _wrap(self._reply_html(text), status, warn=not complete)
        elif complete:
            bundle["text/plain"] = f"{text}\n[{status}]"
        with self._show_lock:
            if self._handle is None:  # finished before the flusher showed the widget
                from IPython.display import display

                display(bundle, raw=True)
            else:
                self._handle.update(bundle, raw=True)
        self.updates += 1
        # The live widget is no longer shown anywhere: it waits, cleared, for the next reply.
        if stuck:
            close_widget(self._widget)
        else:
            widget_pool.give_back(self._widget)

    def _reply_html(self, text: str) -> str:
        """The final HTML of ``text``, no longer than ``MARKDOWN_LIMIT``."""
        if self._markdown is not None:
            # The blocks already rendered while streaming are reused.
            return self._markdown.html(text)
        return render_reply(text, self.fmt)

    # -- the flusher thread -------------------------------------------------------------

    def _text_through(self, count: int) -> str:
        """The text of the first ``count`` chunks; only for one thread at a time."""
        if count > self._joined_count:
            self._joined += "".join(self._parts[self._joined_count : count])
            self._joined_count = count
        return self._joined

    def _live_html(self, reply_html: str, state: str, chars: int) -> str:
        elapsed = self._clock() - self._started
        line = format_status(
            model=self.model,
            target=self.target,
            elapsed=elapsed,
            chars=chars,
            state=state,
            note=self._notice,
        )
        return _wrap(reply_html, line)

    def _flusher(self) -> None:
        # The flusher polls the list of chunks instead of being told of each one: telling it
        # would cost every chunk a call and a lock, and a reply can bring tens of thousands.
        reply_html = ""
        # No count yet: the first pass sets the widget and shows it at once, while the request
        # is still on its way; then the kernel is idle, and the two stdout/stderr flushes a
        # display waits for cost it nothing.
        shown = -1
        chars = 0
        notice = ""
        last_update = self._clock()
        while not self._stopped.is_set():
            count = len(self._parts)
            now = self._clock()
            # While waiting for the first chunk (or showing a notice) the status line ticks;
            # once text flows, only new text causes an update.
            ticking = (count == 0 or self._notice) and now - last_update >= TICK
            if count == shown and self._notice == notice and not ticking:
                self._wake.wait(FIRST_CHUNK_POLL if count == 0 else self._min_interval)
                self._wake.clear()
                continue
            began = now
            try:
                if count != shown:
                    shown = count
                    text = self._text_through(count)
                    chars = len(text)
                    reply_html = live_reply_html(text, self.fmt, self._markdown)
                    if count:
                        self._notice = ""
                notice = self._notice
                state = "waiting…" if count == 0 else "streaming…"
                self._widget.value = self._live_html(reply_html, state, chars)
                if self._handle is None:
                    self._show()
            except Exception:  # noqa: BLE001 - a closed comm must not break the stream
                break
            self.updates += 1
            last_update = self._clock()
            cost = last_update - began
            self._stopped.wait(max(self._min_interval, cost / DISPLAY_SHARE))
