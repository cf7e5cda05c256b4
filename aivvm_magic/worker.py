"""A worker thread that runs calls one at a time, in order: :class:`Worker`.

Like a one-worker :class:`concurrent.futures.ThreadPoolExecutor`, with its futures (a queued
call can be cancelled; ``result()`` waits for it), but its thread is a daemon, started with the
first call. The standard executor's threads are joined when the interpreter exits, so a call
blocked on a network read (a reply from a server that stopped answering) would hold up the
kernel's shutdown until its read timeout.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Worker"]


class Worker:
    """Runs submitted calls one after another on a daemon thread of its own.

    Examples
    --------
    ::

        In [1]: worker = Worker("example")
        In [2]: worker.submit(pow, 2, 10).result()
        Out[2]: 1024
        In [3]: worker.shutdown()
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``function(*args)``; its future says when it ran and what it gave."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} worker is shut down")
            self._queue.put((future, function, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            # False when the call was cancelled while it waited in the queue.
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Cancel what is still queued and let the thread end after the call it is running."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._queue.put(None)
