"""The faults table, shared by the fault tests of every layer: each way a server misbehaves,
and what the client must make of it.

Each fault is staged by :class:`~tests.faultserver.FaultServer` on 127.0.0.1 and met four ways,
one file a layer: by the provider core (``test_faults_provider.py``: the exception, its short
message, the partial text, the retries and the connections left behind), by ``%%aivvm`` in a
real ``InteractiveShell`` (``test_faults_cells.py``: the one-line error, the partial reply shown
and kept, the conversation untouched otherwise, the next cell working), by ``%%aivvm`` in a real
kernel (``test_faults_kernel.py``: the same, plus a kernel that is still alive), and by the chat
panel (``test_faults_panel.py``: the status line and the transcript). Faults of the files a
conversation is exported to and imported from are in ``test_faults_files.py``.

Cases that ``test_provider.py`` and ``test_magics.py`` already prove one at a time (a single
status, a single truncation) are taken here as rows of one table, so that every fault meets
every check. ``docs/RELIABILITY.md`` maps each row to what the user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aivvm_magic.providers import (
    APIError,
    ConnectError,
    IncompleteReply,
    RedirectRefused,
    ReplyTimeout,
)
from tests.conftest import CANARY
from tests.faultserver import (
    Behaviour,
    Exchange,
    FaultServer,
    Gzip,
    Hangup,
    Raw,
    Redirect,
    Reply,
    Reset,
    Stall,
    Truncated,
    cloudflare_block,
    json_error,
    rate_limited,
)

KEY = CANARY
#: Text whose UTF-8 has one-, two-, three- and four-byte characters.
TEXT = "Grüß Gott, 世界! 😀 ok"

NGINX_502_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class ResetAfter(Behaviour):
    """Send the head and ``first`` as one HTTP chunk, wait, then reset the connection (RST).

    The wait lets the client read ``first`` before the RST arrives, so what it has received
    is known; :class:`Truncated` resets at once, which can discard the unread bytes.
    """

    def __init__(self, first: bytes, wait: float = 0.2) -> None:
        self.first = first
        self.wait = wait

    def respond(self, exchange: Exchange) -> bool:
        exchange.send_head(200, framing="chunked")
        exchange.send(b"%x\r\n%s\r\n" % (len(self.first), self.first))
        exchange.pause(self.wait)
        exchange.close(reset=True)
        return False


def gzip_cut() -> Truncated:
    # The first deflate block whole, then the connection closes: the first text must arrive.
    parts = Gzip([b"compressed start ", b"and a lost end"]).encoded_parts()
    return Truncated(
        chunks=parts,
        after=len(parts[0]),
        framing="chunked",
        headers={"Content-Encoding": "gzip"},
        delay=0.05,
    )


@dataclass(frozen=True)
class Fault:
    """One way a server misbehaves, and what the client must make of it.

    ``message`` is a fragment of the error's message, with ``{url}`` for the chat URL;
    ``partial`` the text the error carries (and a cell keeps) when the reply had started.
    """

    id: str
    behaviours: Callable[[FaultServer], list[Behaviour]]
    error: type[Exception]
    message: str
    partial: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    status: int | None = None


def _status(status: int, body: bytes, reason: str, headers: dict[str, str] | None = None) -> Fault:
    return Fault(
        str(status),
        lambda s: [Reply(status, body, headers=headers)],
        APIError,
        f"HTTP {status} from {{url}}: {reason}",
        status=status,
    )


CUT = TEXT.encode()
# Byte 4 is inside the two-byte "ü"; byte 22 inside the four-byte emoji.
CUT_AT = {"chunked": 22, "length": 4}

FAULTS: list[Fault] = [
    _status(400, b"Bad request: messages missing", "Bad request: messages missing"),
    Fault(
        "401-json-with-the-key",
        lambda s: [json_error(401, {"error": {"message": f"Incorrect API key: {KEY}"}})],
        APIError,
        "HTTP 401 from {url}: Incorrect API key: <redacted>",
        status=401,
    ),
    Fault(
        "403-cloudflare",
        lambda s: [cloudflare_block()],
        APIError,
        "HTTP 403 from {url}: Attention Required! | Cloudflare",
        status=403,
    ),
    _status(404, b"Not Found", "Not Found"),
    _status(408, b"Request Timeout", "Request Timeout"),
    Fault(
        "429-seconds",
        lambda s: [rate_limited(7)],
        APIError,
        "HTTP 429 from {url}: Too Many Requests",
        status=429,
    ),
    Fault(
        "429-http-date",
        lambda s: [rate_limited(30, as_date=True)],
        APIError,
        "HTTP 429 from {url}: Too Many Requests",
        status=429,
    ),
    _status(500, b"Error", "Error"),
    _status(502, NGINX_502_HTML, "502 Bad Gateway", {"Content-Type": "text/html"}),
    _status(503, b"Service Unavailable", "Service Unavailable"),
    *(
        Fault(
            f"cut-{framing}",
            lambda s, framing=framing: [
                Truncated(chunks=[CUT[:10], CUT[10:]], after=CUT_AT[framing], framing=framing)
            ],
            IncompleteReply,
            "the connection closed before the end of the reply",
            # The character the cut split is dropped, not guessed at.
            partial=CUT[: CUT_AT[framing]].decode("utf-8", "ignore"),
        )
        for framing in ("chunked", "length")
    ),
    Fault(
        "reset-mid-body",
        lambda s: [ResetAfter(b"one two ")],
        IncompleteReply,
        "the connection was reset",
        partial="one two ",
    ),
    Fault(
        "stall-mid-body",
        lambda s: [Stall(5, chunks=[b"so far "])],
        IncompleteReply,
        "no data for 0.5 s (read timeout)",
        partial="so far ",
        options={"read_timeout": 0.5},
    ),
    Fault(
        "stall-before-headers",
        lambda s: [Stall(5, before_headers=True)],
        ReplyTimeout,
        "No answer from {url} within 0.5 s",
        options={"read_timeout": 0.5},
    ),
    Fault(
        "stall-after-headers",
        lambda s: [Stall(5)],
        ReplyTimeout,
        "No reply from {url} within 0.5 s (read timeout)",
        options={"read_timeout": 0.5},
    ),
    Fault("reset-before-reply", lambda s: [Reset()], ConnectError, "{url}"),
    Fault("hangup-before-reply", lambda s: [Hangup()], ConnectError, "{url}"),
    Fault("not-http", lambda s: [Raw(b"SSH-2.0-OpenSSH_9.6\r\n")], ConnectError, "{url}"),
    Fault(
        "gzip-corrupt",
        lambda s: [Reply(200, b"this is not gzip", headers={"Content-Encoding": "gzip"})],
        IncompleteReply,
        "the compressed body could not be decoded",
    ),
    Fault(
        "gzip-cut",
        lambda s: [gzip_cut()],
        IncompleteReply,
        "the connection closed before the end of the reply",
        partial="compressed start ",
    ),
    Fault(
        "307-to-another-host",
        # The same server under another name is another origin: following would be seen.
        lambda s: [Redirect(s.url_as("localhost") + "/api/chat")],
        RedirectRefused,
        "redirected to another host (localhost); not followed",
    ),
]


# The faults a cell meets the same way as the provider; timeouts come from the traitlet.
CELL_FAULTS = [case for case in FAULTS if case.id != "429-http-date"]


def expected_cell_message(case: Fault, url: str) -> str:
    """The one line a failed cell shows (``errors.one_line`` of the provider's error)."""
    text = case.message.format(url=url)
    return f"reply cut short: {text}" if case.error is IncompleteReply else text
