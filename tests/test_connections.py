"""The provider's connections read ahead: a chunk that has arrived is handed on in one read,
and reading ahead breaks neither connection reuse nor closing."""

from __future__ import annotations

import time

import pytest

from aivvm_magic.providers.transport import (
    RetryPolicy,
    Timeouts,
    iter_body,
    open_stream,
    thread_session,
)
from tests.faultserver import FaultServer, Reply

#: Multi-byte text, so a read split inside a character would show as a wrong decode.
PIECE = "Grüße, 世界 ✓ ".encode()


def post(server: FaultServer, session=None):
    return open_stream(
        server.url + "/api/chat",
        b"{}",
        headers={"Content-Type": "application/json"},
        timeouts=Timeouts(5.0, 5.0),
        retry=RetryPolicy(0, 0.0, 0.0),
        session=session,
    )


def test_a_chunk_already_arrived_is_handed_on_in_one_read(fault: FaultServer) -> None:
    # Six 8 KB chunks, small enough to sit whole in the socket's receive buffer. With
    # http.client's own 8 KB reader each took two reads: one ending at the buffer's edge, one
    # for the chunk's last bytes.
    chunks = [(PIECE * 600)[:8192] for _ in range(6)]
    fault.enqueue(Reply(chunks=chunks, framing="chunked"))
    response = post(fault)
    time.sleep(0.3)  # the whole body is in the socket before the first read
    reads = list(iter_body(response, fault.url, 5.0))
    assert b"".join(reads) == b"".join(chunks)
    assert [len(read) for read in reads] == [8192] * 6


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_one_connection_serves_reply_after_reply(fault: FaultServer, framing: str) -> None:
    # Reading ahead must not swallow the end of one reply nor the start of the next.
    session = thread_session()
    for i in range(5):
        body = PIECE * (3000 + i)
        fault.enqueue(Reply(chunks=[body[:40000], body[40000:]], framing=framing))
        response = post(fault, session)
        assert b"".join(iter_body(response, fault.url, 5.0)) == body
    assert fault.connections_opened == 1


def test_a_reply_left_half_read_closes_its_connection(fault: FaultServer) -> None:
    # Replacing http.client's own reader must give back its hold on the socket, or the socket
    # would stay open after the response closes.
    fault.enqueue(Reply(chunks=[PIECE * 100] * 50, framing="chunked", delay=0.01))
    response = post(fault, thread_session())
    body = iter_body(response, fault.url, 5.0)
    next(body)
    body.close()
    assert fault.wait_for(lambda: fault.open_connections == 0, timeout=3)
