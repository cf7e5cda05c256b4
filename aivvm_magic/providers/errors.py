"""Exceptions raised by the provider core.

Each subclasses the ``requests`` exception a caller of the original gpt4free provider would
already catch, so ``except requests.exceptions.HTTPError`` keeps working. None of them carries
the request (whose body holds the API key), and messages taken from a server are shortened and
have the key blanked out.
"""

from __future__ import annotations

import requests

from ..secret_types import public_url


class ProviderError(requests.exceptions.RequestException):
    """Base class of the errors this package raises while talking to a chat server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class APIError(ProviderError, requests.exceptions.HTTPError):
    """The server answered with a non-2xx status; shown to the user with the server's reason."""

    def __init__(self, status_code: int, reason: str, url: str, retry_after: float | None = None):
        self.status_code = status_code
        self.reason = reason
        # Only the public part: a key in the URL's user info or query stays out of the text.
        self.url = public_url(url)
        self.retry_after = retry_after
        text = f"HTTP {status_code} from {self.url}"
        if reason:
            text += f": {reason}"
        super().__init__(text)


class ConnectError(ProviderError, requests.exceptions.ConnectionError):
    """No connection could be made (refused, unreachable, or the connect timeout fired)."""


class ReplyTimeout(ProviderError, requests.exceptions.ReadTimeout):
    """The server accepted the request but sent nothing within the read timeout."""


class RedirectRefused(ProviderError, requests.exceptions.TooManyRedirects):
    """The server redirected to another origin; not followed, so the key is not sent there."""


class IncompleteReply(ProviderError, requests.exceptions.ChunkedEncodingError):
    """The reply started but was cut short; ``partial`` holds the text that did arrive."""

    def __init__(self, reason: str, partial: str) -> None:
        self.reason = reason
        self.partial = partial
        super().__init__(reason)

    def __str__(self) -> str:
        # Computed when shown: the partial text is filled in after the error is raised.
        return f"The reply was cut short after {len(self.partial):,} characters: {self.reason}"

    @property
    def short(self) -> str:
        """What a status line says: ``stopped`` (by the user), else why it was cut short."""
        return "stopped" if self.reason == "stopped" else f"reply cut short: {self.reason}"


class EmptyReply(IncompleteReply):
    """The server answered 200 and sent no text: no reply, though nothing says it failed."""

    def __init__(self, why: str = "the server sent no text") -> None:
        super().__init__(why, "")

    def __str__(self) -> str:
        return f"The reply was empty: {self.reason}"

    @property
    def short(self) -> str:
        """What a status line says: ``empty reply: <why>``."""
        return f"empty reply: {self.reason}"
