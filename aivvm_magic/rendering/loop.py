"""The render loop: one thread draws every live view of a session, cells and panels alike.

A reply can bring tens of thousands of chunks a second, and jupyter_server drops iopub messages
above 1000 a second, so no view is drawn per chunk. Views are looked at instead: each says
whether it has something new to show (:meth:`LiveView.wants_draw`) and how soon to look again
(:meth:`LiveView.poll_interval`), and the loop draws it at most every ``min_interval`` seconds
(about 20 times a second), less often when drawing it gets expensive: after a draw that took
``cost`` seconds the view waits ``cost / share`` seconds, so the live views take at most about
``share`` of the time however long a reply grows.

Only the loop writes a live view's widgets while the view is registered, so no view needs a lock
for its widgets. A view is drawn in the :mod:`contextvars` context it was registered from:
ipykernel keeps there the parent header that routes output to the cell it belongs to.

The thread starts with the first view, sleeps without a timeout while no view needs looking at,
and stops when the loop is closed (by its session, or at exit).

Pacing is testable without the thread or the wall clock: make the loop with a ``clock`` of
your own and ``threaded=False``, and call :meth:`RenderLoop.run_once` as that clock moves.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DISPLAY_SHARE", "MIN_INTERVAL", "TICK", "LiveView", "RenderLoop"]

logger = logging.getLogger(__name__)

#: Shortest gap between two draws of a view, in seconds (about 20 a second).
MIN_INTERVAL = 0.05
#: The share of the time a view's draws may take. A draw is timed by the clock, so it counts
#: what it cost: while the kernel takes in a reply faster than anyone reads (tens of thousands
#: of chunks a second), a draw waits for the interpreter's lock each time it hands it over,
#: which slows the reply down. Such a draw is followed by a longer pause; at the pace of a
#: model's tokens a draw takes about a millisecond and the rate stays at ``1 / MIN_INTERVAL``.
DISPLAY_SHARE = 0.05
#: How often a status line ticks while nothing new arrives (elapsed time, waiting).
TICK = 0.5


class LiveView(Protocol):
    """Something the render loop draws: a cell's streaming reply, a chat panel."""

    def wants_draw(self, now: float) -> bool:
        """Whether there is something new to show (text, a notice, a tick of the clock)."""

    def draw(self, now: float) -> None:
        """Write the view's widgets; only the render loop calls this."""

    def poll_interval(self) -> float | None:
        """How soon to look at the view again without being woken; None: not until woken."""


@dataclass(eq=False)
class _Entry:
    view: LiveView
    context: contextvars.Context
    #: The earliest time of the next draw.
    next_due: float = 0.0
    #: Draw at the next pass whatever the pace (:meth:`RenderLoop.draw_soon`).
    soon: bool = False
    #: Set when someone waits for the next draw (:meth:`RenderLoop.draw_now`).
    waiters: list[threading.Event] = field(default_factory=list)


class RenderLoop:
    """Draws registered :class:`LiveView` objects on one thread of its own.

    Examples
    --------
    ::

        In [1]: loop = RenderLoop()
        In [2]: loop.add(view)         # drawn from now on, paced
        In [3]: loop.draw_now(view)    # drawn at once; returns when it has been
        In [4]: loop.remove(view)      # not drawn again; returns once no draw of it runs
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL,
        share: float = DISPLAY_SHARE,
        name: str = "aivvm-render",
        threaded: bool = True,
    ) -> None:
        #: The loop's time, in seconds; views' ``now`` comes from it.
        self.clock = clock
        self.min_interval = min_interval
        self.share = share
        self._name = name
        self._threaded = threaded
        self._entries: dict[int, _Entry] = {}
        # Guards the entries; never held while a view draws.
        self._lock = threading.Lock()
        # Held while a view draws, so that remove() can wait for a draw in progress to end.
        self._drawing = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Draws made so far, for tests and benchmarks.
        self.draws = 0

    # -- views --------------------------------------------------------------------------

    def add(self, view: LiveView, context: contextvars.Context | None = None) -> None:
        """Draw ``view`` from now on, in ``context`` (by default a copy of the caller's)."""
        entry = _Entry(view, context if context is not None else contextvars.copy_context())
        with self._lock:
            if self._closed:
                raise RuntimeError("the render loop is closed")
            self._entries[id(view)] = entry
            self._start()
        self._wake.set()

    def remove(self, view: LiveView, timeout: float = 5.0) -> bool:
        """Draw ``view`` no more; return once no draw of it runs (False if one still ran after
        ``timeout`` seconds: a huge reply being rendered, say)."""
        with self._lock:
            entry = self._entries.pop(id(view), None)
        if entry is not None:
            for waiter in entry.waiters:
                waiter.set()
        if threading.current_thread() is self._thread:
            return True
        if not self._drawing.acquire(timeout=timeout):
            return False
        self._drawing.release()
        return True

    def __contains__(self, view: object) -> bool:
        return id(view) in self._entries

    def wake(self) -> None:
        """Look at the views now rather than at their next poll."""
        self._wake.set()

    def draw_soon(self, view: LiveView) -> None:
        """Draw ``view`` at the loop's next pass, whatever its pace, without waiting for it:
        the first text of a reply is shown as soon as it arrives."""
        with self._lock:
            entry = self._entries.get(id(view))
            if entry is None:
                return
            entry.soon = True
        self._wake.set()

    def draw_now(self, view: LiveView, timeout: float = 5.0) -> bool:
        """Draw ``view`` at once, whatever its pace, and wait until it has been drawn.

        For the end of a turn, a reset, a switch: when the call that caused it returns, the
        view shows it. False if ``view`` is not registered or the draw took over ``timeout``.
        """
        if not self._threaded or threading.current_thread() is self._thread:
            view.draw(self.clock())
            return True
        done = threading.Event()
        with self._lock:
            entry = self._entries.get(id(view))
            if entry is None:
                return False
            entry.waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    # -- the loop -------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> float | None:
        """Draw every view that is due and has something new; return how many seconds to wait
        before looking again (None: nothing to look at until woken)."""
        if now is None:
            now = self.clock()
        with self._lock:
            entries = list(self._entries.values())
        wait: float | None = None
        for entry in entries:
            view = entry.view
            if entry.waiters or entry.soon or (now >= entry.next_due and view.wants_draw(now)):
                self._draw(entry)
                now = self.clock()
            poll = view.poll_interval()
            if entry.waiters or entry.soon:
                poll = 0.0
            if poll is not None:
                due = max(poll, entry.next_due - now)
                wait = due if wait is None else min(wait, due)
        return wait

    def _draw(self, entry: _Entry) -> None:
        with self._lock:
            # Taken now: a draw_now() or draw_soon() that comes while this draw runs asks for
            # the next one.
            waiters, entry.waiters = entry.waiters, []
            entry.soon = False
        began = self.clock()
        try:
            with self._drawing:
                if id(entry.view) in self._entries:
                    entry.context.run(entry.view.draw, began)
                    self.draws += 1
        except Exception:  # noqa: BLE001 - one broken view must not stop the others
            logger.exception("A live view failed to draw; it is no longer drawn")
            with self._lock:
                self._entries.pop(id(entry.view), None)
        finally:
            cost = self.clock() - began
            entry.next_due = began + max(self.min_interval, cost / self.share)
            for waiter in waiters:
                waiter.set()

    def _start(self) -> None:
        # Called under the lock: one thread, started with the first view.
        if self._threaded and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            # Cleared before the pass, so a wake() that comes during it is not lost.
            self._wake.clear()
            wait = self.run_once()
            self._wake.wait(wait)

    def close(self) -> None:
        """Stop the thread; views still registered are no longer drawn."""
        with self._lock:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            for waiter in entry.waiters:
                waiter.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<RenderLoop {len(self._entries)} views, {self.draws} draws>"
