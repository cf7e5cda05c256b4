"""How the Aivvm API's replies ended, kept a little while for the client to ask: an extension of
the reference server, which a chatbot-ui server does not have.

The Aivvm protocol streams a reply as bare text: there is no room in the body to say that the
engine stopped at its token limit (``length``) rather than at the reply's end, and the
status and headers are sent before the reply is made. HTTP trailers would fit, but the
clients' HTTP stacks (``http.client``, so urllib3 and requests) read and discard them. So a
streamed reply carries, in its headers, where its ending can be read once the body is over:

- ``X-Aivvm-Model``: what answers (the engine's model name), known when the reply starts;
- ``X-Aivvm-Reply-End``: ``/api/replies?id=ID``, which answers
  ``{"finish_reason": "stop" | "length", "model": ...}`` once the reply has ended.

A client reads both if they are there, and only asks when told where; a real chatbot-ui
server sends neither, and nothing changes for it. The last ``KEPT`` endings are kept.
"""

from __future__ import annotations

import collections
import secrets
import threading
from typing import Any

__all__ = ["ENDINGS_PATH", "MODEL_HEADER", "REPLY_END_HEADER", "ReplyEndings"]

ENDINGS_PATH = "/api/replies"
MODEL_HEADER = "X-Aivvm-Model"
REPLY_END_HEADER = "X-Aivvm-Reply-End"

#: How many endings a server keeps: a client asks for its own at once.
KEPT = 256


class ReplyEndings:
    """The endings of recent replies, by id; any thread may add or read."""

    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._endings: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def start(self, model: str) -> str:
        """A new reply by ``model``: its id (its ending is unknown until :meth:`end`)."""
        reply_id = secrets.token_hex(8)
        with self._lock:
            self._endings[reply_id] = {"finish_reason": None, "model": model}
            while len(self._endings) > self._kept:
                self._endings.popitem(last=False)
        return reply_id

    def end(self, reply_id: str, finish_reason: str) -> None:
        """The reply ``reply_id`` ended for ``finish_reason`` (``stop`` or ``length``)."""
        with self._lock:
            ending = self._endings.get(reply_id)
            if ending is not None:
                ending["finish_reason"] = finish_reason

    def get(self, reply_id: str) -> dict[str, Any] | None:
        """The ending of ``reply_id``, or None when it is unknown or has not ended yet."""
        with self._lock:
            ending = self._endings.get(reply_id)
            return dict(ending) if ending and ending["finish_reason"] else None
