"""What a failed answer says, in one short line, and whether asking again could help.

A server says why it failed in one of two places. Most put the reason in the body (a line of
text, a JSON ``error``, an HTML page). A chatbot-ui server puts it in the status line: its body
is always ``Error``, and its upstream's message is the reason phrase
(``HTTP/1.1 500 Incorrect API key provided.``). :func:`error_reason` reads both.

Such a 500 relays the upstream's refusal of *this* request (a wrong key, a bad temperature):
asking again gets the same answer, so :func:`retryable` says no, unless the message itself
says the trouble will pass (a rate limit, an overloaded model).
"""

from __future__ import annotations

import json
import re
from html import unescape
from http import HTTPStatus

__all__ = ["RETRY_STATUSES", "error_reason", "retryable", "server_message", "short_reason"]

#: Statuses worth another try before the reply starts: the trouble may pass.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Longest reason kept from a server, in characters.
REASON_LIMIT = 200

# Phrases that name the status rather than the trouble: no message of the server's own.
_GENERIC = frozenset({"", "error", "server error", "internal error", "unknown"})

# What an upstream says of trouble that passes: OpenAI's rate limits ("Rate limit reached ...
# Please try again in 20s"), "That model is currently overloaded ...", "The server had an
# error while processing your request", a timeout, a service unavailable for now.
_TRANSIENT = re.compile(
    r"rate.?limit|overloaded|try again|retry|temporar|timed?.?out|unavailable|capacity"
    r"|busy|server had an error",
    re.IGNORECASE,
)

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_reason(body: bytes, content_type: str = "", limit: int = REASON_LIMIT) -> str:
    """A one-line reason from an error body: JSON ``error``/``message``, HTML title, or text."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    if "json" in content_type or text[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error", data.get("message", data.get("detail")))
            if isinstance(error, dict):
                error = error.get("message") or error.get("type")
            if isinstance(error, str) and error:
                text = error
    if "<" in text and (
        "html" in content_type
        or text.lstrip().lower().startswith("<!doctype")
        or "<html" in text[:200].lower()
    ):
        title = _TITLE.search(text)
        text = unescape(title.group(1)) if title else unescape(_TAGS.sub(" ", text))
    return _cut(text, limit)


def _generic(status: int, text: str) -> bool:
    """Whether ``text`` says no more than the status does."""
    try:
        standard = HTTPStatus(status).phrase
    except ValueError:
        standard = ""
    return text.lower() in _GENERIC or text.lower() == standard.lower()


def server_message(status: int, phrase: str | None, limit: int = REASON_LIMIT) -> str:
    """The message a server put in its status line in place of the standard reason phrase
    (``Incorrect API key provided.`` for ``500 Incorrect API key provided.``); ``""`` when the
    phrase is the standard one, or says no more than ``Error``."""
    if not phrase:
        return ""
    # http.client reads the status line as Latin-1; a server that wrote UTF-8 gets it back.
    try:
        phrase = phrase.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    phrase = " ".join(phrase.split())
    return "" if _generic(status, phrase) else _cut(phrase, limit)


def error_reason(status: int, phrase: str | None, body_reason: str) -> str:
    """What the user is told of a failed answer: the server's own status-line message, else
    the body's reason; both when each says something the other does not."""
    message = server_message(status, phrase)
    if not message:
        return body_reason
    if not body_reason or _generic(status, body_reason) or body_reason in message:
        return message
    return _cut(f"{message} ({body_reason})", REASON_LIMIT)


def retryable(status: int, phrase: str | None) -> bool:
    """Whether an answer of ``status`` with reason ``phrase`` is worth asking again.

    A 500 whose status line carries a message of its own relays an upstream's answer to this
    very request: retried only when the message says the trouble passes.
    """
    if status not in RETRY_STATUSES:
        return False
    message = server_message(status, phrase) if status == 500 else ""
    return not message or bool(_TRANSIENT.search(message))
