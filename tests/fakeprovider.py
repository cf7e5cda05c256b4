"""A provider that answers in the test process, from a script: for tests of turns and
conversations, where HTTP is not the subject.

It goes where a real provider goes: the ``fake`` fixture (``conftest.py``) registers a fresh
:class:`FakeProvider` as ``"fake"`` in :data:`aivvm_magic.providers.PROVIDERS`, so
``TurnSettings(provider="fake")`` and ``%config AivvmMagics.provider = "fake"`` reach it, and
the code under test runs as it does against a server: the reply is a real
:class:`~aivvm_magic.providers.reply.StreamingReply` over the scripted chunks, appending to the
buffer the turn hands it, and ``stop()`` reaches it through its
:class:`~aivvm_magic.providers.reply.StreamControl`.

Examples
--------
::

    In [1]: fake.script("half ", error=IncompleteReply("the connection was reset", ""))
    In [2]: outcome = TurnRunner(conversation, "go", TurnSettings(provider="fake")).run()
    In [3]: outcome.text, fake.requests[-1]["messages"]
    Out[3]: ('half ', [{'role': 'user', 'content': 'go'}])
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from aivvm_magic.providers.base import AbstractProvider, Messages
from aivvm_magic.providers.errors import IncompleteReply
from aivvm_magic.providers.reply import StreamControl, StreamingReply

#: How long a reply told to ``hold`` waits for ``stop()`` before it gives up.
HOLD_TIMEOUT = 10.0


@dataclass(frozen=True)
class Script:
    """One scripted reply: its chunks, then ``error`` raised (if any), or with ``hold`` a wait
    for ``stop()``, as a stream blocked on the network waits."""

    chunks: tuple[str, ...]
    error: BaseException | None = None
    hold: bool = False


def echo(messages: Messages) -> tuple[str, ...]:
    """The last user message, in word-sized chunks: what a reply is when none is scripted."""
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return tuple(piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece)


class FakeProvider(AbstractProvider):
    """Replies from :meth:`script`, in order (the echo of the last user message once they run
    out); remembers every request in :attr:`requests`.

    Make one for a test with :meth:`fresh`: the script and the record are class attributes,
    as a provider is used through its class.
    """

    url = "fake://in-process"
    working = True
    supports_stream = True
    supports_gpt_35_turbo = True
    supports_gpt_4 = True

    #: The replies still to give, first first.
    scripts: ClassVar[deque[Script]] = deque()
    #: Every request, as a server records one: ``model``, ``messages`` and the options.
    requests: ClassVar[list[dict[str, Any]]] = []
    #: Set when a reply told to ``hold`` has sent its chunks and waits to be stopped.
    holding: ClassVar[threading.Event] = threading.Event()

    @classmethod
    def fresh(cls) -> type[FakeProvider]:
        """A provider of this kind with its own script and record, for one test."""
        state = {"scripts": deque(), "requests": [], "holding": threading.Event()}
        return type(cls)(cls.__name__, (cls,), state)

    @classmethod
    def script(cls, *chunks: str, error: BaseException | None = None, hold: bool = False) -> None:
        """Queue the next reply: ``chunks``, then ``error`` raised mid-reply (an
        ``IncompleteReply`` keeps the chunks as the partial text), or with ``hold`` a wait until
        the reply is stopped."""
        cls.scripts.append(Script(chunks, error, hold))

    @classmethod
    def create_completion(
        cls, model: str, messages: Messages, stream: bool, **kwargs: Any
    ) -> StreamingReply | str:
        options = {k: v for k, v in kwargs.items() if k not in ("buffer", "on_retry")}
        cls.requests.append({"model": model, "messages": [dict(m) for m in messages], **options})
        script = cls.scripts.popleft() if cls.scripts else Script(echo(messages))
        control = StreamControl()
        reply = StreamingReply(cls._stream(script, control), control, kwargs.get("buffer"))
        return reply if stream else reply.text()

    @classmethod
    def _stream(cls, script: Script, control: StreamControl) -> Iterator[str]:
        # Checked before each chunk, as the transport checks after each read.
        for chunk in script.chunks:
            if control.stopped.is_set():
                raise IncompleteReply("stopped", "")
            yield chunk
        if script.hold:
            cls.holding.set()
            if not control.stopped.wait(HOLD_TIMEOUT):
                raise TimeoutError(f"the reply was not stopped within {HOLD_TIMEOUT:g} s")
        if control.stopped.is_set():
            raise IncompleteReply("stopped", "")
        if script.error is not None:
            raise script.error
