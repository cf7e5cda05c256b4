"""One chat turn: conversation in, streamed reply out, recorded exactly once.

The magic and the chat panel both run turns through :class:`TurnRunner`, so they share the same
rules: history is trimmed to the model's context, turns on one conversation never interleave,
a reply that stops early (error, interrupt, Stop) is kept as a marked partial turn when any text
arrived, an empty reply is a failure and never a turn, and nothing already in the conversation
is lost. No IPython here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import protocol
from .conversation import Conversation, PendingReply, Turn
from .conversation.turn import utc_now
from .errors import one_line
from .providers import EmptyReply, StreamingReply, get_provider
from .providers.transport import RetryCallback
from .reply_buffer import ReplyBuffer
from .request_options import RequestOptions
from .token_usage import TokenUsage

if TYPE_CHECKING:
    from .replay import Replay

#: The status note of a reply that stopped at the model's token limit: complete as far as the
#: protocol goes, but perhaps mid-sentence.
TOKEN_LIMIT_NOTE = "the reply reached the model's token limit"

#: The status note of a reply about as long as the server lets one be, when the server does
#: not say whether it stopped it there (chatbot-ui's 1,000 tokens).
CAP_NOTE = "about {cap:,} tokens: the reply may have stopped at the server's {cap:,}-token cap"


@dataclass(frozen=True)
class TurnSettings:
    """Everything a request needs besides the conversation. ``key`` never shows in a repr."""

    model: str = protocol.DEFAULT_MODEL
    temperature: float = protocol.DEFAULT_TEMPERATURE
    system: str = protocol.DEFAULT_SYSTEM_MESSAGE
    base_url: str = ""
    provider: str = "aivvm"
    key: str = field(default="", repr=False)
    connect_timeout: float = RequestOptions.connect_timeout
    read_timeout: float = RequestOptions.read_timeout
    retries: int = RequestOptions.retries
    history_limit: int = 0
    #: Recorded replies to answer from, or to record into (``AivvmMagics.replay_path``).
    replay: Replay | None = field(default=None, repr=False, compare=False)
    #: The alias the model was asked by (``-m local``), ``""`` when none was.
    alias: str = ""


@dataclass
class TurnOutcome:
    """How a turn ended: the text that arrived, whether it is whole, and why not."""

    text: str = ""
    complete: bool = False
    error: BaseException | None = None
    turn: Turn | None = None
    #: How the server said the reply ended, where its protocol says (``"length"``: at the
    #: model's token limit, so the text may stop mid-thought).
    finish_reason: str | None = None
    #: The server's cap on a reply's tokens, when the reply is about that long: it may have
    #: been stopped there, though nothing said so.
    near_cap: int | None = None
    #: The tokens the server says the request and the reply took; None where it did not say.
    usage: TokenUsage | None = None
    #: When the turn began (ISO-8601, UTC) and how many seconds it took: the recorded turn's,
    #: or for a turn not recorded, the request's.
    started: str = ""
    duration: float = 0.0
    #: What the server says answered (a model's name), where it says; else ``""``.
    answered_by: str = ""

    @property
    def note(self) -> str:
        """A short, user-facing reason the reply is not complete ("" when it is)."""
        return one_line(self.error)

    @property
    def status_note(self) -> str:
        """What the status line adds: :attr:`note`, or for a complete reply that the server
        says ended at the model's token limit, that it did, and for one about as long as the
        server's cap, that it may have."""
        if self.complete and self.finish_reason == "length":
            return TOKEN_LIMIT_NOTE
        if self.complete and self.near_cap:
            return CAP_NOTE.format(cap=self.near_cap)
        return self.note


class TurnRunner:
    """Runs one turn on ``conversation``; ``stop()`` from any thread ends it early.

    ``record=False`` is a one-off question: no history is sent, nothing is recorded, and the
    conversation is neither locked nor told.
    """

    def __init__(
        self,
        conversation: Conversation,
        prompt: str,
        settings: TurnSettings,
        *,
        source: str = "cell",
        cell_id: str | None = None,
        record: bool = True,
        new: bool = False,
        busy_timeout: float | None = 30.0,
        buffer: ReplyBuffer | None = None,
    ) -> None:
        self.conversation = conversation
        self.prompt = prompt
        self.settings = settings
        self.source = source
        self.cell_id = cell_id
        self.record = record
        self.new = new
        self.busy_timeout = busy_timeout
        #: The reply's text as it arrives: the conversation's pending turn and every view of
        #: the reply read this one buffer.
        self.buffer = buffer if buffer is not None else ReplyBuffer()
        #: The messages the request was built with (history and prompt), once it was.
        self.messages: list[dict[str, str]] = []
        self._reply: StreamingReply | None = None
        self._stopped = threading.Event()

    def stop(self) -> None:
        """End the turn now (thread-safe): a reply streaming is cut, what arrived is kept as a
        partial turn; a turn still waiting for its conversation gives up."""
        self._stopped.set()
        reply = self._reply
        if reply is not None:
            reply.stop()
        elif self.record:
            self.conversation.wake_waiters()

    def run(
        self,
        on_chunk: Callable[[str], None] | None = None,
        on_retry: RetryCallback | None = None,
        on_text: Callable[[], None] | None = None,
    ) -> TurnOutcome:
        """Stream the reply into :attr:`buffer`, calling ``on_chunk`` per chunk (for a view
        that prints them); never raises for a failed reply.

        ``ConversationBusy`` is raised (nothing started) when another reply holds the
        conversation longer than ``busy_timeout``, or :meth:`stop` came while waiting for it.
        Interrupts and errors end the turn and come back in ``outcome.error``; the caller
        decides how to show them. ``on_text()`` is called once, when the first text arrives
        (the conversation's listeners hear ``"text_started"`` then too), so that views can
        show it at once.
        """
        if not self.record:
            messages = [{"role": "user", "content": self.prompt}]
            return self._stream(messages, on_chunk, on_retry, on_text)
        with self.conversation.streaming(
            self.prompt,
            self.source,
            cell_id=self.cell_id,
            timeout=self.busy_timeout,
            buffer=self.buffer,
            cancel=self._stopped,
        ) as pending:
            if self.new:
                self.conversation.reset()
            messages, _dropped = self.conversation.fit(
                self.prompt,
                max_chars=get_provider(self.settings.provider).max_input_chars(self.settings.model),
                max_turns=self.settings.history_limit or None,
                system=self.settings.system,
            )

            outcome = self._stream(messages, on_chunk, on_retry, on_text, pending)
            if outcome.complete or outcome.text:
                outcome.turn = pending.record(
                    model=self.settings.model,
                    temperature=self.settings.temperature,
                    system=self.settings.system,
                    complete=outcome.complete,
                    error=outcome.note or None,
                    provider=self.settings.provider,
                    finish_reason=outcome.finish_reason,
                    usage=outcome.usage,
                )
                # One start time and duration for the turn, wherever it is shown.
                outcome.started = outcome.turn.started
                outcome.duration = outcome.turn.duration
        return outcome

    def _stream(
        self,
        messages: list[dict[str, str]],
        on_chunk: Callable[[str], None] | None,
        on_retry: RetryCallback | None,
        on_text: Callable[[], None] | None = None,
        pending: PendingReply | None = None,
    ) -> TurnOutcome:
        s = self.settings
        self.messages = messages
        outcome = TurnOutcome(started=utc_now())
        clock = time.monotonic()
        try:
            provider = get_provider(s.provider)
            if s.replay is not None:
                provider = s.replay.wrap(provider, s.provider)
            reply = provider.create_completion(
                s.model,
                messages,
                True,
                system_message=s.system,
                temperature=s.temperature,
                base_url=s.base_url or None,
                key=s.key,
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                retries=s.retries,
                on_retry=on_retry,
                buffer=self.buffer,
            )
            assert isinstance(reply, StreamingReply)
            self._reply = reply
            if self._stopped.is_set():
                reply.stop()
            with reply:
                # The reply appends each chunk to the buffer the views read; a view that
                # prints (a terminal) is also handed it. The first chunk is told of apart, so
                # that the per-chunk loop below stays free of any test for it.
                for chunk in reply:
                    # The server's headers are in: what answers, for the views to say.
                    self.buffer.answered_by = reply.answered_by or ""
                    if on_chunk is not None:
                        on_chunk(chunk)
                    if on_text is not None:
                        on_text()
                    if pending is not None:
                        pending.text_started()
                    break
                if on_chunk is None:
                    for _ in reply:
                        pass
                else:
                    for chunk in reply:
                        on_chunk(chunk)
            if not self.buffer.text():
                # Whatever the protocol allows, no text is no reply: nothing to show, record
                # or send back as history.
                raise EmptyReply
            outcome.complete = True
        except BaseException as exc:  # noqa: BLE001 - interrupts too: keep what arrived
            outcome.error = exc
        finally:
            reply = self._reply
            outcome.text = self.buffer.text()
            outcome.duration = round(time.monotonic() - clock, 3)
            if reply is not None:
                outcome.finish_reason = reply.finish_reason
                outcome.usage = reply.usage
                if reply.near_cap:
                    outcome.near_cap = reply.token_cap
            outcome.answered_by = self.buffer.answered_by
            # The stream is over (stop() has nothing left to end): let the reply go.
            self._reply = None
        return outcome
