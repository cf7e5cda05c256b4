"""HTTP plumbing shared by providers: sessions, retries, redirects, errors and raw streaming.

Everything here is about getting bytes off the wire safely; what the bytes mean is the
provider's business. The rules it enforces:

* a POST is retried only before any byte of its reply has arrived (connection errors, 408,
  429 and 5xx, but not a 500 relaying an upstream's refusal: :mod:`.answers`), with
  exponential backoff and jitter, honouring ``Retry-After`` up to a cap, and never beyond a
  budget of seconds from the first attempt;
* redirects are followed only within the same origin, so a request body that carries an API key
  is never sent to another host;
* each network read is handed on at once, whatever the framing (chunked, Content-Length, or
  close-delimited), and a body that ends early raises :class:`IncompleteReply`;
* responses are closed in ``finally``, so ``break``, errors and interrupts free the connection.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from ..reply_buffer import ReplyBuffer
from ..request_options import PROBE_TIMEOUT, RequestOptions
from ..secret_types import SecretBytes, public_url
from .answers import RETRY_STATUSES as RETRY_STATUSES
from .answers import error_reason, retryable, short_reason
from .connections import READ_AHEAD, ReadAheadAdapter
from .decoding import TextDecoder
from .errors import (
    APIError,
    ConnectError,
    IncompleteReply,
    ProviderError,
    RedirectRefused,
    ReplyTimeout,
)
from .reply import StreamControl, StreamingReply

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: How much of an error body is read to find its reason.
ERROR_BODY_LIMIT = 64 * 1024

RetryCallback = Callable[[int, float, str], None]

USER_AGENT = "aivvm-magic (python-requests)"


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection, and for each read (the longest gap between chunks).

    Made by :func:`post_reply` from the caller's :class:`RequestOptions`, which has the
    defaults; so is :class:`RetryPolicy`.
    """

    connect: float
    read: float


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a request whose reply has not started."""

    retries: int
    backoff: float
    max_wait: float
    #: Seconds from the first attempt within which a retry may start: however the waits add
    #: up, a request that keeps failing is reported by then (plus its last attempt).
    budget: float = RequestOptions.retry_budget

    def delay(self, attempt: int, retry_after: float | None, elapsed: float = 0.0) -> float | None:
        """Seconds to sleep before retry ``attempt`` (1-based), ``elapsed`` seconds after the
        first attempt began, or None to give up."""
        if attempt > self.retries:
            return None
        if retry_after is not None:
            wait = retry_after if retry_after <= self.max_wait else None
        else:
            # Full jitter around the exponential step keeps many clients from retrying in step.
            step = min(self.max_wait, self.backoff * 2 ** (attempt - 1))
            wait = random.uniform(step / 2, step)
        if wait is None or elapsed + wait > self.budget:
            return None
        return wait


_local = threading.local()


def thread_session() -> requests.Session:
    """This thread's shared session, so consecutive calls reuse one connection."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        # Retries are ours (they must stop once a reply has started), never urllib3's.
        adapter = ReadAheadAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def normalise_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; a ValueError unless it is an http(s) URL."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Base URL must be an http:// or https:// URL, not {base_url!r}")
    return base_url.rstrip("/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` blanked out."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "<redacted>")
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, given as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe_connect_error(exc: BaseException) -> str:
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 20:
        cause = todo.pop()
        if cause in chain:
            continue
        chain.append(cause)
        todo.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)
        todo.extend(a for a in cause.args if isinstance(a, BaseException))
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    if any(isinstance(c, urllib3.exceptions.NameResolutionError) for c in chain):
        return "host name not found"
    # NewConnectionError subclasses ConnectTimeoutError, so only the exact type means a timeout.
    if any(
        type(c) is urllib3.exceptions.ConnectTimeoutError or isinstance(c, TimeoutError)
        for c in chain
    ):
        return "timed out while connecting"
    # The connection was made, then lost before any answer: say so, or the user goes looking
    # for a wrong address. (RemoteDisconnected is also a ConnectionResetError: check it first.)
    if any(isinstance(c, http.client.RemoteDisconnected) for c in chain):
        return "the server closed the connection without answering"
    if any(isinstance(c, ConnectionResetError) for c in chain):
        return "the connection was reset before any answer"
    if any(isinstance(c, http.client.BadStatusLine) for c in chain):
        return "the answer is not HTTP"
    return "could not connect"


def open_stream(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str],
    timeouts: Timeouts,
    retry: RetryPolicy,
    secret: str | None = None,
    session: requests.Session | None = None,
    on_retry: RetryCallback | None = None,
) -> requests.Response:
    """POST ``body`` and return the 2xx response with its body still unread.

    Raises :class:`APIError`, :class:`ConnectError`, :class:`ReplyTimeout` or
    :class:`RedirectRefused`. Only failures before the reply starts are retried.
    """
    session = session or thread_session()
    attempt = 0
    redirects = 0
    target = url
    started = time.monotonic()
    while True:
        reason: str
        retry_after: float | None = None
        error: Exception
        try:
            response = session.post(
                target,
                data=body,
                headers=headers,
                stream=True,
                timeout=(timeouts.connect, timeouts.read),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectionError as exc:
            what = _describe_connect_error(exc)
            error = ConnectError(f"Could not connect to {public_url(target)}: {what}")
            reason = what
        except requests.exceptions.ReadTimeout:
            # The server took the request but said nothing: it may be working on it, so a
            # retry could run the same prompt twice. Report instead.
            error = ReplyTimeout(
                f"No answer from {public_url(target)} within {timeouts.read:g} s (read timeout)"
            )
            reason = ""
        else:
            status = response.status_code
            if 200 <= status < 300:
                return response
            if status in REDIRECT_STATUSES:
                location = response.headers.get("Location", "")
                response.close()
                next_url = urljoin(target, location)
                if _origin(next_url) != _origin(url):
                    elsewhere = _origin(next_url)[1]
                    raise RedirectRefused(
                        f"{public_url(target)} redirected to another host ({elsewhere}); "
                        "not followed, so the request and its key stay here"
                    )
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RedirectRefused(f"Too many redirects from {public_url(url)}")
                target = next_url
                continue
            try:
                data = response.raw.read(ERROR_BODY_LIMIT, decode_content=True) or b""
            except Exception:  # a broken error body still leaves the status to report
                data = b""
            finally:
                response.close()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error = _api_error(response, data, target, secret, retry_after)
            if not retryable(status, response.reason):
                raise error
            reason = f"HTTP {status}"
        if isinstance(error, ReplyTimeout):
            # Raised here, outside the except block, so that the exception carries no
            # __context__: requests' own exception holds the request, and its body the key.
            raise error
        attempt += 1
        wait = retry.delay(attempt, retry_after, time.monotonic() - started)
        if wait is None:
            raise error
        if on_retry is not None:
            on_retry(attempt, wait, reason)
        time.sleep(wait)


def _api_error(
    response: requests.Response,
    data: bytes,
    url: str,
    secret: str | None,
    retry_after: float | None = None,
) -> APIError:
    """The :class:`APIError` of a non-2xx ``response`` whose body began with ``data``: the
    reason from its status line or its body, the key blanked out of both."""
    body_reason = short_reason(data, response.headers.get("Content-Type", ""))
    reason = error_reason(response.status_code, response.reason, body_reason)
    return APIError(response.status_code, redact(reason, secret), url, retry_after)


def iter_body(response: requests.Response, url: str, read_timeout: float) -> Iterator[bytes]:
    """Yield each read of ``response``'s body as soon as it arrives; close it in ``finally``.

    ``IncompleteReply`` (with an empty ``partial``: text is the caller's business) marks a body
    that the framing shows was cut short, a reset connection, or a read timeout mid-body.
    """
    raw = response.raw
    received = 0
    # A body without a Content-Encoding is read as it is: urllib3's decoding path would only
    # copy each read through a buffer of its own (a fifth of the time of a fast reply).
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    decode = encoding not in ("", "identity")
    try:
        while True:
            try:
                # read1 returns whatever one socket read brings (or one HTTP chunk's worth), at
                # most the connection's buffer, instead of waiting for the whole amount as
                # read()/iter_content() do.
                data = raw.read1(READ_AHEAD, decode_content=decode)
            except urllib3.exceptions.ReadTimeoutError:
                if received:
                    raise IncompleteReply(
                        f"no data for {read_timeout:g} s (read timeout)", ""
                    ) from None
                raise ReplyTimeout(
                    f"No reply from {public_url(url)} within {read_timeout:g} s (read timeout)"
                ) from None
            except (
                urllib3.exceptions.ProtocolError,
                urllib3.exceptions.DecodeError,
                OSError,
            ) as exc:
                raise IncompleteReply(_describe_break(exc), "") from None
            if not data:
                return
            received += len(data)
            yield data
    finally:
        response.close()


def post_reply(
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str],
    secret: str,
    options: RequestOptions,
    session: requests.Session | None,
    on_retry: RetryCallback | None,
    parse: Callable[[Iterator[str], str, StreamControl], Iterator[str]] | None = None,
    buffer: ReplyBuffer | None = None,
) -> StreamingReply:
    """POST ``payload`` as UTF-8 JSON; the lazy :class:`StreamingReply` of the answer's text.

    ``options`` says how long to wait and how often to retry. ``parse(text, secret, control)``
    turns the body's text into the reply's (an event stream into its contents, say); without
    it the body is the reply. The reply's text goes into ``buffer`` when one is given. The
    body holds the key in some protocols, so it is kept as :class:`SecretBytes`.
    """
    body = SecretBytes(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    control = StreamControl()
    timeouts = Timeouts(options.connect_timeout, options.read_timeout)
    retry = RetryPolicy(
        options.retries, options.backoff, options.max_retry_wait, options.retry_budget
    )

    def respond() -> requests.Response:
        return open_stream(
            url,
            body,
            headers=headers,
            timeouts=timeouts,
            retry=retry,
            secret=secret,
            session=session,
            on_retry=on_retry,
        )

    text = stream_text(respond, url, timeouts.read, control)
    chunks = text if parse is None else parse(text, secret, control)
    return StreamingReply(chunks, control, buffer)


def stream_text(
    respond: Callable[[], requests.Response], url: str, read_timeout: float, control: StreamControl
) -> Iterator[str]:
    """Yield the body of ``respond()``'s response as text, decoded incrementally as it arrives.

    The request goes out at the first ``next()``. ``control.stop()`` from another thread ends
    the stream with ``IncompleteReply("stopped")``.
    """
    response = respond()
    control.attach(response)
    _read_reply_headers(response, url, control)
    decoder = TextDecoder()
    try:
        for data in iter_body(response, url, read_timeout):
            text = decoder.decode(data)
            if text:
                yield text
        if control.stopped.is_set():
            # A shut-down socket reads as a clean end; it must not pass for a whole reply.
            raise IncompleteReply("stopped", "")
    except IncompleteReply as exc:
        # Bytes held back for a character the cut split are dropped, not turned into a guess.
        if control.stopped.is_set():
            exc.reason = "stopped"
        raise
    tail = decoder.flush()
    if tail:
        yield tail
    if control.ending_url:
        control.finish_reason = _reply_ending(control.ending_url) or control.finish_reason


#: The response headers of our reference server that say what answers and where a reply's
#: ending can be read (see :mod:`aivvm_magic.server.reply_endings`).
MODEL_HEADER = "X-Aivvm-Model"
REPLY_END_HEADER = "X-Aivvm-Reply-End"
#: How long to wait for a reply's ending: the server has it as soon as the body ends.
ENDING_TIMEOUT = 2.0


def _read_reply_headers(response: requests.Response, url: str, control: StreamControl) -> None:
    """Note what the server says answers, and where it says the reply's ending is kept.

    Only a path on the same server is followed, and only one that names a reply ending.
    """
    model = response.headers.get(MODEL_HEADER, "").strip()
    if model:
        control.answered_by = model[:200]
    where = response.headers.get(REPLY_END_HEADER, "").strip()
    if where.startswith("/api/replies?"):
        parts = urlsplit(url)
        control.ending_url = f"{parts.scheme}://{parts.netloc}{where}"


def _reply_ending(url: str) -> str | None:
    """The finish reason the server kept for a reply (``stop``, ``length``); None when it
    cannot say. A reply is whole whether or not this answers, so a failure is only silence."""
    try:
        ending = get_json(url, timeout=ENDING_TIMEOUT)
    except ProviderError:
        return None
    reason = ending.get("finish_reason") if isinstance(ending, dict) else None
    return reason if reason in ("stop", "length") else None


def _describe_break(exc: BaseException) -> str:
    text = str(exc)
    if "IncompleteRead" in text:
        return "the connection closed before the end of the reply"
    if "reset" in text.lower():
        return "the connection was reset"
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return "the compressed body could not be decoded"
    return "the connection broke"


def get_json(
    url: str,
    *,
    method: str = "GET",
    payload: dict[str, Any] | None = None,
    timeout: float = PROBE_TIMEOUT,
    secret: str | None = None,
    session: requests.Session | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """Fetch JSON with a short timeout; raises the package's own errors, never retries."""
    session = session or thread_session()
    failure: ProviderError | None = None
    try:
        response = session.request(
            method,
            url,
            json=payload,
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
        )
    except requests.exceptions.ConnectionError as exc:  # before Timeout: ConnectTimeout is both
        what = _describe_connect_error(exc)
        failure = ConnectError(f"Could not connect to {public_url(url)}: {what}")
    except requests.exceptions.Timeout:
        failure = ReplyTimeout(f"No answer from {public_url(url)} within {timeout:g} s")
    except requests.exceptions.RequestException as exc:
        # A body cut short, a bad redirect, ...: callers fall back on ProviderError.
        failure = ProviderError(f"{public_url(url)}: {type(exc).__name__}")
    if failure is not None:
        # Outside the except blocks: requests' exception (whose request holds the key in a
        # POST body) must not ride along as __context__.
        raise failure
    with response:
        if not 200 <= response.status_code < 300:
            raise _api_error(response, response.content[:ERROR_BODY_LIMIT], url, secret)
        try:
            return response.json()
        except ValueError:
            raise APIError(response.status_code, "the answer is not JSON", url) from None
