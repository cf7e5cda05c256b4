"""How patiently a chat request is made: its timeouts and retries, and their defaults, once.

The provider core, the turn settings and the magics' traitlets all take their defaults from
here. Only the standard library is imported, so the magics read this at ``%load_ext`` time
without loading ``requests``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Seconds a quick question to a server (which models it has, whether it answers) may wait
#: for a connection, and then for the answer.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class RequestOptions:
    """The timeouts and retries of a chat request.

    A provider's per-call keywords (``read_timeout=...``) override single fields; the retry
    callback is not among them, as it belongs to one call's display, not to its settings.

    Examples
    --------
    ::

        In [1]: from aivvm_magic.providers import Aivvm, RequestOptions
        In [2]: patient = RequestOptions(read_timeout=300.0, retries=5)
        In [3]: Aivvm.create_completion("gpt-4", messages, False, options=patient)
    """

    #: Seconds to wait for a connection.
    connect_timeout: float = 10.0
    #: Seconds to wait for the first byte, and for each later read (the longest gap between
    #: two chunks).
    read_timeout: float = 60.0
    #: Retries of a request whose reply has not started (connection errors, 408, 429, 5xx).
    retries: int = 2
    #: Seconds of the first retry's backoff step; each later step doubles it.
    backoff: float = 0.5
    #: The longest wait before a retry, a server's ``Retry-After`` included (longer: give up).
    max_retry_wait: float = 20.0
    #: Seconds from the first attempt within which a retry may start (later: give up), so a
    #: failing request is reported within this long however its waits add up.
    retry_budget: float = 30.0

    def override(self, **changes: float | None) -> RequestOptions:
        """These options with each of ``changes`` that is not None."""
        given = {name: value for name, value in changes.items() if value is not None}
        return replace(self, **given) if given else self
