"""Self-tests of :mod:`faultserver`: each misbehaviour looks, on the wire, as it claims to.

Checked with the two clients the provider tests care about: the standard library's
``http.client`` (what a low-level reader sees) and ``requests`` (what the provider uses).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import socket
import time
import zlib
from collections.abc import Iterator

import pytest
import requests

from tests.faultserver import (
    CLOUDFLARE_403_HTML,
    INVALID_UTF8,
    Big,
    FaultServer,
    Gzip,
    Hangup,
    Raw,
    Redirect,
    Reply,
    Reset,
    Stall,
    Trickle,
    Truncated,
    closed_port,
    cloudflare_block,
    json_error,
    rate_limited,
    server_error,
    split_utf8,
)

pytestmark = pytest.mark.timeout(30)

FRAMINGS = ["chunked", "length", "close"]
TIMEOUT = 5.0
CHAT = {
    "model": {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
    "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "Привет, echo me back"},
    ],
    "key": "sk-secret",
    "prompt": "You are ChatGPT.",
    "temperature": 0.7,
}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault:
        yield fault
    assert not fault.errors


def connect(server: FaultServer, timeout: float = TIMEOUT) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def post(conn: http.client.HTTPConnection, body: bytes = b"{}") -> http.client.HTTPResponse:
    conn.request("POST", "/api/chat", body=body, headers={"Content-Type": "application/json"})
    return conn.getresponse()


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
def test_each_framing_delivers_the_chunks(server: FaultServer, framing: str) -> None:
    chunks = [b"Hello", b", ", b"world", b"!"]
    behaviour = Reply(chunks=chunks, framing=framing)
    server.enqueue(behaviour)
    conn = connect(server)
    response = post(conn)
    assert response.status == 200
    assert response.read() == b"Hello, world!"
    headers = {name.lower(): value for name, value in response.getheaders()}
    if framing == "chunked":
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
    elif framing == "length":
        assert headers["content-length"] == "13"
    else:
        assert "content-length" not in headers
        assert "transfer-encoding" not in headers
        assert headers["connection"] == "close"
    assert len(behaviour.write_times) == len(chunks)
    conn.close()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_chunks_arrive_as_they_are_written(server: FaultServer, framing: str) -> None:
    behaviour = Reply(chunks=[b"one ", b"two ", b"three"], framing=framing, delay=0.15)
    server.enqueue(behaviour)
    conn = connect(server)
    response = post(conn)
    arrivals: list[tuple[float, bytes]] = []
    while data := response.read1(65536):
        arrivals.append((time.perf_counter(), data))
    assert b"".join(data for _, data in arrivals) == b"one two three"
    # The first piece was readable before the second was even written.
    assert arrivals[0][1] == b"one "
    assert arrivals[0][0] < behaviour.write_times[1]
    assert len(arrivals) == 3
    conn.close()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_empty_body(server: FaultServer, framing: str) -> None:
    server.enqueue(Reply(200, b"", framing=framing))
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == b""


def test_default_echoes_the_last_user_message(server: FaultServer) -> None:
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.content.decode("utf-8") == "Привет, echo me back"
    assert len(server.default.write_times) == 4  # one chunk per word


def test_default_without_user_message_is_400(server: FaultServer) -> None:
    response = requests.post(server.url + "/api/chat", data=b"not json", timeout=TIMEOUT)
    assert (response.status_code, response.text) == (400, "Error")


# --- truncation and resets --------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_truncation_is_an_incomplete_read(server: FaultServer, framing: str) -> None:
    server.enqueue(Truncated(chunks=[b"abcdef", b"ghijkl"], after=8, framing=framing))
    conn = connect(server)
    response = post(conn)
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    # http.client reports the whole chunks it read; it drops the one that was cut.
    assert caught.value.partial == (b"abcdef" if framing == "chunked" else b"abcdefgh")
    conn.close()


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_truncation_is_an_error_for_requests(server: FaultServer, framing: str) -> None:
    server.enqueue(Truncated(b"0123456789", after=4, framing=framing))
    response = requests.post(server.url + "/api/chat", json=CHAT, stream=True, timeout=TIMEOUT)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response.content  # noqa: B018 - reading the body is the point
    response.close()


def test_truncated_close_framing_looks_like_a_short_reply(server: FaultServer) -> None:
    server.enqueue(Truncated(b"0123456789", after=4, framing="close"))
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.content == b"0123"


def test_truncated_chunked_at_a_boundary_lacks_only_the_terminator(server: FaultServer) -> None:
    server.enqueue(Truncated(chunks=[b"abc", b"def"], after=6, framing="chunked"))
    conn = connect(server)
    response = post(conn)
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == b"abcdef"
    conn.close()


def test_truncated_rejects_an_after_that_does_not_truncate() -> None:
    with pytest.raises(ValueError):
        Truncated(b"abc", after=3, framing="length")
    with pytest.raises(ValueError):
        Truncated(b"abc", after=4)


def test_truncated_with_reset(server: FaultServer) -> None:
    server.enqueue(Truncated(b"0123456789", after=4, framing="length", reset=True))
    conn = connect(server)
    with pytest.raises((ConnectionResetError, http.client.HTTPException)):
        post(conn).read()
    conn.close()


def test_reset_without_answer(server: FaultServer) -> None:
    server.enqueue(Reset())
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)


def test_hangup_without_answer(server: FaultServer) -> None:
    server.enqueue(Hangup())
    conn = connect(server)
    with pytest.raises(http.client.RemoteDisconnected):
        post(conn)
    conn.close()


def test_raw_garbage_status_line(server: FaultServer) -> None:
    server.enqueue(Raw(b"SPDY/9 what\r\n\r\n"))
    conn = connect(server)
    with pytest.raises(http.client.BadStatusLine):
        post(conn)
    conn.close()


# --- stalls, trickles, timing -----------------------------------------------------------------


def test_stall_before_headers_times_out_and_ends_when_client_leaves(server: FaultServer) -> None:
    stall = Stall(10, before_headers=True)
    server.enqueue(stall)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url + "/api/chat", json=CHAT, timeout=(TIMEOUT, 0.3))
    assert time.monotonic() - started < 3
    assert server.wait_for(lambda: server.open_connections == 0, timeout=3)
    assert stall.ended == ["client closed"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_stall_mid_body(server: FaultServer, framing: str) -> None:
    server.enqueue(Stall(10, chunks=[b"partial "], framing=framing))
    conn = connect(server, timeout=0.3)
    response = post(conn)
    assert response.status == 200
    assert response.read1(65536) == b"partial "
    with pytest.raises(TimeoutError):
        response.read1(65536)
    # With "Connection: close" http.client hands the socket over to the response, so closing
    # the connection object alone would leave it open (which the server would see).
    response.close()
    conn.close()
    assert server.wait_for(lambda: server.open_connections == 0, timeout=3)


def test_trickle_sends_one_byte_per_write(server: FaultServer) -> None:
    trickle = Trickle(b"slowly", delay=0.01)
    server.enqueue(trickle)
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.content == b"slowly"
    assert len(trickle.write_times) == 6
    gaps = [b - a for a, b in zip(trickle.write_times, trickle.write_times[1:], strict=False)]
    assert min(gaps) >= 0.009


def test_client_leaving_mid_reply_counts_a_disconnect(server: FaultServer) -> None:
    server.enqueue(Reply(chunks=[b"x" * 1000] * 200, framing="chunked", delay=0.02))
    response = requests.post(server.url + "/api/chat", json=CHAT, stream=True, timeout=TIMEOUT)
    next(response.iter_content(chunk_size=100))
    response.close()
    assert server.wait_for(lambda: server.disconnects == 1, timeout=5)
    assert server.wait_for(lambda: server.open_connections == 0, timeout=3)


# --- content ----------------------------------------------------------------------------------


def test_invalid_and_split_utf8_arrive_byte_exact(server: FaultServer) -> None:
    chunks = split_utf8("naïve Привет 🙂")
    assert all(len(chunk) for chunk in chunks)
    assert len(chunks) == 1 + len("ïПривет🙂")
    for chunk in chunks[:-1]:
        with pytest.raises(UnicodeDecodeError):
            chunk.decode("utf-8")
    server.enqueue(Reply(chunks=chunks, framing="chunked"), Reply(body=INVALID_UTF8))
    first = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    second = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert first.content.decode("utf-8") == "naïve Привет 🙂"
    assert second.content == b"ok \xff\xfe end"


@pytest.mark.parametrize("framing", FRAMINGS)
def test_big_reply(server: FaultServer, framing: str) -> None:
    big = Big(10 * 1024 * 1024 + 7, framing=framing)
    server.enqueue(big)
    started = time.monotonic()
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert time.monotonic() - started < 10
    assert len(response.content) == big.size
    assert response.content == big.expected_body()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_gzip_is_decodable_piece_by_piece(server: FaultServer, framing: str) -> None:
    chunks = [b"first part, ", b"second part, ", b"third part"]
    gzip = Gzip(chunks, framing=framing)
    parts = gzip.encoded_parts()
    decoder = zlib.decompressobj(wbits=31)
    assert [decoder.decompress(part) for part in parts] == chunks
    assert decoder.eof
    server.enqueue(gzip)
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.content == b"".join(chunks)


# --- status replies ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 408, 502, 503])
def test_plain_status_replies(server: FaultServer, status: int) -> None:
    server.enqueue(Reply(status, b"nope", headers={"X-Test": "1"}))
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert (response.status_code, response.text) == (status, "nope")
    assert response.headers["X-Test"] == "1"


def test_server_error_and_cloudflare_page(server: FaultServer) -> None:
    server.enqueue(server_error(), cloudflare_block())
    first = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    second = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert (first.status_code, first.text) == (500, "Error")
    assert second.status_code == 403
    assert second.headers["Content-Type"].startswith("text/html")
    assert second.headers["Server"] == "cloudflare"
    assert second.content == CLOUDFLARE_403_HTML
    assert "<title>Attention Required! | Cloudflare</title>" in second.text


def test_rate_limited_with_seconds_and_date(server: FaultServer) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    server.enqueue(rate_limited(7), rate_limited(when))
    first = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    second = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 429
    assert email.utils.parsedate_to_datetime(second.headers["Retry-After"]) == when


def test_rate_limited_as_date_from_now(server: FaultServer) -> None:
    server.enqueue(rate_limited(30, as_date=True))
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    wait = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 28 <= wait <= 30


def test_json_error(server: FaultServer) -> None:
    server.enqueue(json_error(401, {"error": {"message": "bad key"}}))
    response = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "bad key"}}


def test_queue_runs_in_order_then_falls_back_to_default(server: FaultServer) -> None:
    server.enqueue(server_error(), server_error(status=503))
    statuses = [
        requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 503, 200]
    assert server.pending == 0


# --- redirects --------------------------------------------------------------------------------


def test_redirect_to_another_origin(server: FaultServer) -> None:
    with FaultServer() as other:
        target = other.url_as("localhost") + "/api/chat"
        server.enqueue(Redirect(target), Redirect(target))
        response = requests.post(
            server.url + "/api/chat", json=CHAT, timeout=TIMEOUT, allow_redirects=False
        )
        assert response.status_code == 307
        assert response.headers["Location"] == target
        assert other.requests == []
        # What a careless client does: follows the 307 and sends the body (and key) along.
        followed = requests.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
        assert followed.status_code == 200
        assert other.requests[0].json["key"] == "sk-secret"
        assert other.requests[0].headers["host"] == f"localhost:{other.port}"


# --- requests, connections, keep-alive --------------------------------------------------------


def test_recorded_request(server: FaultServer) -> None:
    requests.post(
        server.url + "/api/chat?x=1", json=CHAT, headers={"X-Custom": "yes"}, timeout=TIMEOUT
    )
    (recorded,) = server.requests
    assert (recorded.method, recorded.path, recorded.version) == (
        "POST",
        "/api/chat?x=1",
        "HTTP/1.1",
    )
    assert recorded.json == CHAT
    assert recorded.headers["x-custom"] == "yes"
    assert recorded.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in recorded.headers)
    assert recorded.body.startswith(b"{")
    assert recorded.arrived <= time.perf_counter()
    assert recorded.connection == 1


def test_chunked_request_body_is_read(server: FaultServer) -> None:
    requests.post(server.url + "/x", data=iter([b'{"a": ', b"1}"]), timeout=TIMEOUT)
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.requests[0].json == {"a": 1}


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_keep_alive_serves_two_requests_on_one_connection(
    server: FaultServer, framing: str
) -> None:
    server.enqueue(Reply(body=b"one", framing=framing), Reply(body=b"two", framing=framing))
    conn = connect(server)
    assert post(conn).read() == b"one"
    assert post(conn).read() == b"two"
    conn.close()
    assert [r.connection for r in server.requests] == [1, 1]
    assert server.connections_opened == 1
    assert server.wait_for(lambda: server.connections_closed == 1)


def test_close_framing_ends_the_connection(server: FaultServer) -> None:
    server.enqueue(Reply(body=b"one", framing="close"))
    with requests.Session() as session:
        assert session.post(server.url, json=CHAT, timeout=TIMEOUT).content == b"one"
        assert session.post(server.url, json=CHAT, timeout=TIMEOUT).status_code == 200
    assert [r.connection for r in server.requests] == [1, 2]


def test_connection_counters(server: FaultServer) -> None:
    assert (server.connections_opened, server.open_connections) == (0, 0)
    with requests.Session() as session:
        for _ in range(3):
            session.post(server.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
        assert server.connections_opened == 1
        assert server.open_connections == 1
    assert server.wait_for(lambda: server.open_connections == 0)
    assert server.connections_closed == 1
    assert server.disconnects == 0


def test_close_shuts_idle_keep_alive_connections() -> None:
    fault = FaultServer().start()
    session = requests.Session()
    session.post(fault.url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    assert fault.open_connections == 1
    started = time.monotonic()
    fault.close()
    assert time.monotonic() - started < 2
    assert fault.open_connections == 0
    session.close()


def test_closed_port_refuses_connections() -> None:
    url = closed_port()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url + "/api/chat", json=CHAT, timeout=TIMEOUT)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=TIMEOUT)
