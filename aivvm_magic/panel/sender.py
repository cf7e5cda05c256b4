"""Sending a panel's messages: each one a :class:`Job`, run in order on the panel's worker.

Widget callbacks run on the kernel's shell thread, so replies stream on a worker thread of the
panel's own and the kernel stays free to run cells. Messages sent while one streams wait in the
worker's queue, in order; Stop cancels a queued message before any request is made, and ends a
running one at once (its partial reply is kept). A message runs through the same
:class:`~aivvm_magic.turns.TurnRunner` as a cell, with the session's target and settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from ..conversation import Conversation, ConversationBusy
from ..errors import one_line
from ..session import Session
from ..turns import TurnOutcome, TurnRunner, TurnSettings
from ..worker import Worker

__all__ = ["Job", "Sender"]

#: The note of a message stopped before its reply started.
STOPPED_EARLY = "stopped before the reply started"


class Job:
    """One message sent from a panel: what to send, and, once it ran, how it ended."""

    def __init__(self, conversation: Conversation, prompt: str, settings: TurnSettings) -> None:
        self.conversation = conversation
        self.prompt = prompt
        self.settings = settings
        #: Done when the job has run (or was cancelled while queued); set when it is sent.
        self.future: Future[TurnOutcome | None] | None = None
        #: The turn being run, from the moment the job starts.
        self.runner: TurnRunner | None = None
        self.outcome: TurnOutcome | None = None
        #: Why the message was not answered, in a few words ("" when it was).
        self.note = ""
        #: Where it was sent, as status lines say it (once known).
        self.target = ""
        self._lock = threading.Lock()
        self._stopped = False

    def attach(self, runner: TurnRunner) -> bool:
        """Make ``runner`` the one :meth:`stop` stops; False if the job was stopped already."""
        with self._lock:
            self.runner = runner
            return not self._stopped

    def stop(self) -> None:
        """Cancel the message if it is still queued, else end its turn now."""
        with self._lock:
            self._stopped = True
            runner = self.runner
        if self.future is not None and self.future.cancel():
            self.note = STOPPED_EARLY
        elif runner is not None:
            runner.stop()

    @property
    def waiting(self) -> bool:
        """Whether the job's turn waits for another reply to leave the conversation."""
        runner = self.runner
        if runner is None or self.future is None or self.future.done():
            return False
        pending = self.conversation.pending
        return self.conversation.busy and (pending is None or pending.buffer is not runner.buffer)

    @property
    def text(self) -> str:
        """The reply's text: whole, or what arrived before it stopped ("" if nothing did)."""
        return self.outcome.text if self.outcome is not None else ""


class Sender:
    """Runs a panel's jobs one at a time on a worker thread started with the first message.

    ``finished(job)`` hears of each job once it is no longer among :attr:`jobs` and before its
    future is done; ``changed()`` whenever the jobs changed, so the panel can redraw;
    ``report()`` is called inside the ``except`` block of an unexpected error, to show it.
    """

    def __init__(
        self,
        session: Session,
        *,
        finished: Callable[[Job], Any],
        changed: Callable[[], None],
        report: Callable[[], None],
    ) -> None:
        self._session = session
        self._finished = finished
        self._changed = changed
        self._report = report
        self._worker = Worker("aivvm-panel-sender")
        self._lock = threading.Lock()
        self._jobs: list[Job] = []

    def send(self, job: Job) -> Job:
        """Queue ``job``; its future is done when it has run."""
        with self._lock:
            self._jobs.append(job)
        job.future = self._worker.submit(self._run_job, job)
        job.future.add_done_callback(lambda future: self._settle(job, future))
        self._changed()
        return job

    def _run_job(self, job: Job) -> TurnOutcome | None:
        try:
            self._run(job)
        except Exception as exc:  # noqa: BLE001 - said in the status line, and shown
            job.note = one_line(exc)
            self._report()
        finally:
            self._forget(job)
            self._finished(job)
        return job.outcome

    def _run(self, job: Job) -> None:
        # Where the message's own settings say (an alias names its provider and endpoint).
        base_url, _, job.target = self._session.target(
            job.settings.base_url or None, job.settings.provider
        )
        runner = TurnRunner(
            job.conversation,
            job.prompt,
            replace(job.settings, base_url=base_url),
            source="panel",
            busy_timeout=self._session.settings.busy_timeout,
        )
        if not job.attach(runner):
            job.note = STOPPED_EARLY
            return
        self._changed()  # "waiting for another reply", if the conversation is busy
        try:
            job.outcome = runner.run()
        except ConversationBusy as exc:
            job.note = one_line(exc)
            return
        job.note = job.outcome.note

    def _settle(self, job: Job, future: Future[Any]) -> None:
        # A job cancelled in the queue never runs: it is forgotten here instead.
        if future.cancelled():
            job.note = job.note or STOPPED_EARLY
            self._forget(job)

    def _forget(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
        self._changed()

    @property
    def jobs(self) -> list[Job]:
        """The jobs queued or running, oldest first."""
        with self._lock:
            return list(self._jobs)

    def running(self, conversation: Conversation) -> Job | None:
        """The job whose turn is under way on ``conversation``, if any."""
        for job in self.jobs:
            if job.runner is not None and job.conversation is conversation:
                return job
        return None

    def stop(self) -> None:
        """Stop every job: the queued ones never run, the running one ends now."""
        for job in self.jobs:
            job.stop()

    def close(self) -> None:
        """Cancel what is queued; a reply already streaming carries on and is recorded."""
        self._worker.shutdown()
