"""Values that carry an API key but never show it in a repr, and URLs without the key.

IPython's Verbose tracebacks (``%xmode Verbose``), debuggers and logging of locals print each
frame's variables with ``repr``. The key, and the request body and headers that hold it, are
kept in these types from the moment a provider reads the key, so no repr can leak it; they
behave as the plain ``str``/``bytes`` they are everywhere else.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class SecretStr(str):
    """A str whose repr hides its value (``'<hidden>'``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<hidden>'" if self else "''"


class SecretBytes(bytes):
    """Bytes (a request body holding a key) whose repr says only their size."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<request body, {len(self):,} bytes>"


def hidden(value: str) -> SecretStr:
    """``value`` as a :class:`SecretStr`."""
    return value if isinstance(value, SecretStr) else SecretStr(value)


def public_url(url: str) -> str:
    """``url`` as it may be shown, logged or saved: without its user name, password, query and
    fragment, where a key can travel (``https://user:KEY@host/v1?key=KEY``). Any text that is
    not an http(s) URL (``embedded server, echo engine``) is returned as it is.

    Every message that names a URL a request went to passes it through here first: the base
    URL is the user's, and some servers take their key in it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return url
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        port = parts.port
    except ValueError:  # not a port number: no URL a request went to
        return f"{parts.scheme}://{host}"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
