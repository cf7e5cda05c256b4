"""Recorded replies: a notebook's requests answered from a file, the same on every run.

A :class:`ReplayRecord` is a JSON-lines file kept beside the notebook: a header line, then one
line per request with its reply. :class:`Replay` puts it in front of a provider. In ``record``
mode each request goes to the provider and each reply that arrives whole is recorded; in
``replay`` mode each request is answered from the record, with no server at all, and a request
the record lacks fails with one line saying how to record it. So a notebook whose cells a real
model answered can be run again anywhere, and its outputs compared exactly (nbval).

**The same request** is the same provider, model, system message, temperature and messages
(roles and contents, the history included): everything that shapes the reply. The base URL
and the key are left out: they say where the request went and who sent it, not what it asked,
and a key must never be written down. So a record made against the embedded server (on a new
port each run) or with one key replays anywhere, and the file holds no secret.

The file is rewritten whole, atomically, each time a reply is recorded (a new reply for a
request already there takes its place), one request a line in the order first recorded, so it
diffs well and sits in version control next to the notebook::

    {"format": "aivvm-replay", "version": 1}
    {"provider": "aivvm", "model": "gpt-3.5-turbo", "temperature": 0.7, "system": "…",
     "messages": [{"role": "user", "content": "Hi"}], "reply": "Hello!", "finish_reason": null}

(each entry on one line; wrapped here).

Examples
--------
::

    In [1]: %config AivvmMagics.replay_path = "notebook.replay.jsonl"
    In [2]: %config AivvmMagics.replay_mode = "record"   # once, against the real model
    In [3]: %config AivvmMagics.replay_mode = "replay"   # from then on: no server needed
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import protocol
from .conversation.files import write_atomically
from .providers import StreamingReply
from .providers.reply import StreamControl
from .reply_buffer import ReplyBuffer
from .settings import REPLAY_MODES

__all__ = [
    "FORMAT",
    "VERSION",
    "Replay",
    "ReplayFormatError",
    "ReplayMissing",
    "ReplayRecord",
    "Request",
]

#: The header line's ``"format"`` and ``"version"``.
FORMAT = "aivvm-replay"
VERSION = 1
_REQUEST_FIELDS = ("provider", "model", "messages", "system", "temperature")
_FIELDS = (*_REQUEST_FIELDS, "reply", "finish_reason")


class ReplayMissing(LookupError):
    """A request in replay mode that the record does not hold: the cell (or the panel) fails
    with this one line, which says how to record it."""


class ReplayFormatError(ValueError):
    """The record file is not a record this version reads: shown as one line naming it."""


class Request(NamedTuple):
    """A request as a record knows it: everything that shapes its reply (never the base URL
    or the key)."""

    provider: str
    model: str
    messages: Sequence[Mapping[str, str]]
    system: str
    temperature: float

    def key(self) -> str:
        """What identifies the request in a record: its fields as canonical JSON (the provider
        as ``-p`` takes it, in any case; only each message's role and content)."""
        return json.dumps(
            [
                self.provider.lower(),
                self.model,
                self.system,
                float(self.temperature),
                [[message["role"], message["content"]] for message in self.messages],
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def entry(self, reply: str, finish_reason: str | None) -> dict[str, Any]:
        """The request with its reply, as a line of the record holds it."""
        return {
            "provider": self.provider.lower(),
            "model": self.model,
            "temperature": float(self.temperature),
            "system": self.system,
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "reply": reply,
            "finish_reason": finish_reason,
        }


def _key_of(entry: Mapping[str, Any]) -> str:
    return Request(*(entry[name] for name in _REQUEST_FIELDS)).key()


def _check_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
        raise ValueError(f"an entry needs exactly the keys {', '.join(_FIELDS)}")
    text_fields = ("provider", "model", "system", "reply")
    if not all(isinstance(entry[name], str) for name in text_fields):
        raise ValueError(f"{', '.join(text_fields)} must be strings")
    if isinstance(entry["temperature"], bool) or not isinstance(entry["temperature"], (int, float)):
        raise ValueError("temperature must be a number")
    messages = entry["messages"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ValueError("messages must be a list of {role, content} objects")
    if entry["finish_reason"] is not None and not isinstance(entry["finish_reason"], str):
        raise ValueError("finish_reason must be a string or null")
    return entry


class ReplayRecord:
    """The record file at ``path``: read again whenever it changed on disk; thread-safe.

    Examples
    --------
    ::

        In [1]: record = ReplayRecord("notebook.replay.jsonl")
        In [2]: hi = Request("aivvm", "gpt-4", [{"role": "user", "content": "Hi"}], "", 0.0)
        In [3]: record.add(hi, reply="Hello!")
        In [4]: record.find(hi)
        Out[4]: {'provider': 'aivvm', ..., 'reply': 'Hello!', 'finish_reason': None}
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._read_stamp: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<ReplayRecord {str(self.path)!r}>"

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._entries)

    def _refresh(self) -> None:
        """Read the file again if it changed since it was last read (or written here)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._entries, self._read_stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._read_stamp:
            self._entries = self._read()
            self._read_stamp = stamp

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayFormatError(f"{self.path}: cannot be read ({exc})") from None
        entries: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
                if number == 1:
                    if data != {"format": FORMAT, "version": VERSION}:
                        raise ValueError(
                            f'the first line must be {{"format": "{FORMAT}", "version": {VERSION}}}'
                        )
                    continue
                entry = _check_entry(data)
                entries[_key_of(entry)] = entry
            except ValueError as exc:  # JSONDecodeError is a ValueError
                raise ReplayFormatError(
                    f"{self.path}, line {number}: not an aivvm replay record ({exc})"
                ) from None
        if not lines:
            raise ReplayFormatError(f"{self.path}: the file is empty")
        return entries

    def find(self, request: Request) -> dict[str, Any] | None:
        """The recorded entry of ``request``, or None."""
        key = request.key()
        with self._lock:
            self._refresh()
            return self._entries.get(key)

    def add(self, request: Request, *, reply: str, finish_reason: str | None = None) -> None:
        """Record ``reply`` as the answer to ``request`` (in place of an older one), and
        rewrite the file."""
        entry = request.entry(reply, finish_reason)
        with self._lock:
            self._refresh()
            self._entries[request.key()] = entry
            entries = list(self._entries.values())

            def write(file: Any) -> None:
                file.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
                for each in entries:
                    file.write(json.dumps(each, ensure_ascii=False) + "\n")

            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, write)
            stat = self.path.stat()
            self._read_stamp = (stat.st_mtime_ns, stat.st_size)


class Replay:
    """A record and what to do with it (``mode``: ``replay`` or ``record``), in front of a
    provider: :meth:`wrap` gives what the turn runner calls instead of the provider."""

    def __init__(self, record: ReplayRecord, mode: str) -> None:
        if mode not in REPLAY_MODES or mode == "off":
            raise ValueError(f"mode must be 'replay' or 'record', not {mode!r}")
        self.record = record
        self.mode = mode

    def __repr__(self) -> str:
        return f"<Replay {self.mode} {str(self.record.path)!r}>"

    def describe(self) -> str:
        """How status lines name where replies come from in replay mode."""
        return f"replay of {self.record.path.name}"

    def wrap(self, provider: Any, name: str) -> _ReplayingProvider:
        """Stand in for ``provider`` (called ``name``, as ``-p`` names it)."""
        return _ReplayingProvider(self, provider, name)


class _ReplayingProvider:
    """A provider's ``create_completion``, answered from the record or recorded into it."""

    def __init__(self, replay: Replay, provider: Any, name: str) -> None:
        self._replay = replay
        self._provider = provider
        self._name = name

    def create_completion(
        self,
        model: str,
        messages: list[dict[str, str]],
        stream: bool,
        *,
        system_message: str = protocol.DEFAULT_SYSTEM_MESSAGE,
        temperature: float = protocol.DEFAULT_TEMPERATURE,
        buffer: ReplyBuffer | None = None,
        **kwargs: Any,
    ) -> StreamingReply | str:
        """As the provider's, for a request from the record or recorded into it."""
        record = self._replay.record
        request = Request(self._name, model, messages, system_message, temperature)
        if self._replay.mode == "replay":
            entry = record.find(request)
            if entry is None:
                raise ReplayMissing(self._missing(model, messages))
            control = StreamControl()
            control.finish_reason = entry["finish_reason"]
            reply = StreamingReply(_chunks(entry["reply"]), control, buffer)
        else:
            inner = self._provider.create_completion(
                model,
                messages,
                True,
                system_message=system_message,
                temperature=temperature,
                buffer=buffer,
                **kwargs,
            )
            # The inner reply fills the buffer the views read; this one only passes its
            # chunks on (into a buffer of its own) and records the reply once it is whole.
            reply = StreamingReply(_recording(inner, record, request), inner.control)
        return reply if stream else reply.text()

    def _missing(self, model: str, messages: list[dict[str, str]]) -> str:
        last = " ".join(messages[-1]["content"].split()) if messages else ""
        last = last if len(last) <= 40 else last[:39] + "…"
        return (
            f"no recorded reply to this request in {self._replay.record.path.name} ({model}, "
            f"{len(messages)} messages, the last {last!r}); record it with "
            '%config AivvmMagics.replay_mode = "record" (or AIVVM_REPLAY_MODE=record)'
        )


def _chunks(text: str) -> Iterator[str]:
    if text:
        yield text


def _recording(inner: StreamingReply, record: ReplayRecord, request: Request) -> Iterator[str]:
    try:
        yield from inner
        # Only a reply that arrived whole is worth replaying.
        record.add(request, reply=inner.partial, finish_reason=inner.finish_reason)
    finally:
        inner.close()
