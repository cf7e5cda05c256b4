"""A cell's reply: a live view while it streams, and a static bundle once it is done.

In a kernel the live view is a pooled ``HTML`` widget (:mod:`.widgets`) that the session's
render loop (:mod:`.loop`) draws from the reply's buffer, at most about 20 times a second;
markdown is rendered incrementally (:mod:`.incremental`), so a draw near the end of a long reply
costs what one near its start does. When the reply ends, the widget is replaced by a static
``text/plain`` + sanitised ``text/html`` bundle, so a saved notebook shows the reply anywhere,
with or without a kernel or widget state. In a terminal the chunks are printed as they come.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from ..reply_buffer import ReplyBuffer
from ..token_usage import TokenUsage
from .formats import MARKDOWN_FORMATS, format_mimetypes
from .incremental import MarkdownStream
from .loop import MIN_INTERVAL, TICK, RenderLoop
from .replies import (
    MARKDOWN_LIMIT,
    format_status,
    live_reply_html,
    render_reply,
    reply_html,
)
from .widgets import close_widget, widget_pool

__all__ = ["FIRST_CHUNK_POLL", "StreamingDisplay", "widget_pool"]

#: How often the live view looks for the first chunk: it shows within this long of arriving.
FIRST_CHUNK_POLL = 0.01

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class StreamingDisplay:
    """Shows one reply as it streams: a live widget in a kernel, plain prints elsewhere.

    ``start(buffer)``, then in a terminal ``append(chunk)`` per chunk (in a kernel the render
    loop reads the buffer), then ``finish(...)`` exactly once. ``notice(text)`` shows a
    transient note (a retry, say). While started, the render loop owns the widget; after
    ``finish`` the cell's thread does, and gives it back to the pool.
    """

    def __init__(
        self,
        *,
        model: str,
        target: str,
        fmt: str = "markdown",
        mode: str = "widget",
        loop: RenderLoop | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if mode == "widget" and loop is None:
            raise ValueError("a widget display needs the session's render loop")
        self.model = model
        self.target = target
        self.fmt = fmt
        self.mode = mode
        #: Live draws and the final bundle: what the frontend was sent.
        self.updates = 0
        self._loop = loop
        self._stream = stream or sys.stdout
        self._buffer = ReplyBuffer()
        self._notice = ""
        self._clock = loop.clock if loop is not None else time.monotonic
        self._started = 0.0
        self._markdown = MarkdownStream() if fmt in MARKDOWN_FORMATS else None
        self._widget: Any = None
        self._handle: Any = None
        # What the last draw showed: chunks, notice and the time; -1 until the first draw.
        self._shown = -1
        self._shown_notice = ""
        self._drawn_at = 0.0
        self._body = ""
        self._chars = 0

    # -- the streaming path -------------------------------------------------------------

    def start(self, buffer: ReplyBuffer, *, live: bool = True) -> None:
        """Show the (empty) reply with a waiting status line, and follow ``buffer`` from now;
        with ``live=False``, only take ``buffer`` (whole already) for :meth:`finish` to show.

        The widget is shown by the render loop, while this thread goes on to send the request:
        showing it costs two stdout/stderr flush round trips in ipykernel, which a fast reply
        would otherwise wait for.
        """
        self._buffer = buffer
        self._started = self._clock()
        if self.mode != "widget" or not live:
            return
        self._widget = widget_pool.take()
        assert self._loop is not None
        # Drawn in this cell's context, where ipykernel keeps the parent header that routes
        # the output to this cell.
        self._loop.add(self)

    def text_started(self) -> None:
        """The reply's first text arrived: show it now rather than at the next look."""
        if self._loop is not None and self._widget is not None:
            self._loop.draw_soon(self)

    def append(self, chunk: str) -> None:
        """In a terminal, print a chunk of the reply as it arrives."""
        if self.mode != "widget":
            self._stream.write(chunk)
            self._stream.flush()

    def notice(self, text: str) -> None:
        """Show ``text`` in the status line until the next chunk arrives."""
        self._notice = text
        if self.mode == "widget":
            assert self._loop is not None
            self._loop.wake()
        else:
            self._stream.write(f"[{text}]\n")
            self._stream.flush()

    # -- as a live view (the render loop calls these) -------------------------------------

    def wants_draw(self, now: float) -> bool:
        """New text, a new notice, the first draw, or the status line's tick."""
        count = self._buffer.chunks
        if count != self._shown or self._notice != self._shown_notice:
            return True
        # While waiting for the first chunk (or showing a notice) the elapsed time ticks.
        return (count == 0 or bool(self._notice)) and now - self._drawn_at >= TICK

    def poll_interval(self) -> float | None:
        """Often while the first chunk is awaited, at the live pace after."""
        return FIRST_CHUNK_POLL if self._buffer.chunks == 0 else MIN_INTERVAL

    def draw(self, now: float) -> None:
        """Write the live widget (showing it on the first draw)."""
        count = self._buffer.chunks
        if count != self._shown:
            text = self._buffer.text()
            self._chars = len(text)
            self._body = live_reply_html(text, self.fmt, self._markdown)
            if count:
                self._notice = ""
        self._shown, self._shown_notice = count, self._notice
        state = "waiting…" if count == 0 else "streaming…"
        status = format_status(
            model=self._buffer.answered_by or self.model,
            target=self.target,
            elapsed=now - self._started,
            chars=self._chars,
            state=state,
            note=self._notice,
        )
        self._widget.value = reply_html(self._body, status)
        if self._handle is None:
            self._show()
        self._drawn_at = now
        self.updates += 1

    def _show(self) -> None:
        from IPython.display import display

        # The bundle is built here rather than by the widget's own repr, which would format
        # every trait; the plain text is what a frontend without widgets shows meanwhile.
        view = {"version_major": 2, "version_minor": 0, "model_id": self._widget.model_id}
        bundle = {"text/plain": "aivvm: reply streaming…", WIDGET_VIEW: view}
        self._handle = display(bundle, raw=True, display_id=True)

    # -- the end ------------------------------------------------------------------------

    def finish(
        self,
        *,
        complete: bool,
        note: str = "",
        usage: TokenUsage | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Stop live updates and leave the final static bundle in the output.

        ``complete=False`` marks the reply as partial; ``note`` says why (shown in the status).
        ``usage`` adds the tokens to the status line; ``metadata`` goes with the bundle, into
        the output's ``metadata`` in a saved notebook (the reply's provenance).
        """
        stuck = False
        if self._widget is not None:
            assert self._loop is not None
            # Still drawing a huge reply after that: leave it its own renderer and widget.
            stuck = not self._loop.remove(self)
            if stuck:
                self._markdown = None
        text = self._buffer.text()
        now = self._clock()
        if complete:
            # A server may well answer 200 with nothing: say so rather than show nothing.
            state = "" if text else "empty reply"
        else:
            state = "incomplete" if text else "failed"
        status = format_status(
            model=self._buffer.answered_by or self.model,
            target=self.target,
            elapsed=now - self._started,
            chars=len(text),
            state=state,
            note=note,
            usage=usage,
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
        has_code = False
        if len(text) <= MARKDOWN_LIMIT:
            body = self._final_html(text)
            html = reply_html(body, status, warn=not complete, saved=True)
            bundle["text/html"] = html
            has_code = complete and "aivvm-has-code" in html
            if complete:
                bundle.update(format_mimetypes(text, self.fmt))
        elif complete:
            bundle["text/plain"] = f"{text}\n[{status}]"
        extra = {"metadata": dict(metadata)} if metadata else {}
        if self._handle is None:  # finished before the render loop showed the widget
            from IPython.display import display

            display(bundle, raw=True, **extra)
        else:
            self._handle.update(bundle, raw=True, **extra)
        self.updates += 1
        if has_code:
            self._show_code_tools()
        # The live widget is no longer shown anywhere: it waits, cleared, for the next reply.
        if self._widget is None:
            pass
        elif stuck:
            close_widget(self._widget)
        else:
            widget_pool.give_back(self._widget)
        self._markdown = None
        self._body = ""

    def _show_code_tools(self) -> None:
        """Copy and "Insert as a new cell" for the reply's code blocks, while a kernel runs:
        a widget output of its own after the reply's, which shows nothing itself."""
        from IPython.display import display

        from .frontend import CodeTools, current_cell_id

        tools = CodeTools(cell_id=current_cell_id())
        view = {"version_major": 2, "version_minor": 0, "model_id": tools.model_id}
        # Nothing where widgets cannot be drawn: the reply above is all there is to see.
        display({"text/plain": "", WIDGET_VIEW: view}, raw=True)

    def _final_html(self, text: str) -> str:
        """The final HTML of ``text``, no longer than ``MARKDOWN_LIMIT``."""
        if self._markdown is not None:
            # The blocks already rendered while streaming are reused.
            return self._markdown.html(text)
        return render_reply(text, self.fmt)
