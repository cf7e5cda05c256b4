"""Streaming latency and throughput of the Aivvm client, side by side with two baselines.

1. First-chunk delay: the server writes a piece every 20 ms; each piece carries its write time,
   and the reader notes when the piece reaches it. p50/p99 of write-to-read delay per framing.
2. Throughput: 50 MB of multi-byte UTF-8 as fast as the server can send it. MB/s.

Readers: a raw socket (the floor), the design document's original approach (requests
``iter_content(chunk_size=4096)`` with a decode per chunk), and ``Aivvm.create_completion``.

``python bench/streaming.py [--count 100] [--size-mb 50] [--markdown]``
"""

from __future__ import annotations

import argparse
import codecs
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chunkserver import BULK_PIECE  # noqa: E402

from aivvm_magic.providers import Aivvm  # noqa: E402

FRAMINGS = ("chunked", "length", "close")
MESSAGES = [{"role": "user", "content": "bench"}]


#: Rounds of the throughput readers, each taking its turn in every round.
THROUGHPUT_ROUNDS = 9


def start_chunkserver() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("chunkserver.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    return proc, f"http://127.0.0.1:{port}"


# -- readers: each yields text (or bytes) pieces as it gets them ---------------------------


def raw_socket(base: str, query: str) -> Iterator[bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /api/chat?{query} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        yield head.split(b"\r\n\r\n", 1)[1]
        while data := sock.recv(262144):
            yield data


def raw_socket_text(base: str, query: str) -> Iterator[str]:
    # The floor for a reader that must hand out text: the same reads, decoded incrementally.
    decoder = codecs.getincrementaldecoder("utf-8")()
    for data in raw_socket(base, query):
        yield decoder.decode(data)


def raw_socket_text_kept(base: str, query: str) -> Iterator[str]:
    # The floor for a reader that must also keep the text, as the provider does (the partial
    # reply of a cut stream, the views that read it): the same, each piece kept till the end.
    kept: list[str] = []
    for text in raw_socket_text(base, query):
        kept.append(text)
        yield text


def original(base: str, query: str) -> Iterator[str]:
    response = requests.post(f"{base}/api/chat?{query}", json={}, stream=True)
    response.raise_for_status()
    for chunk in response.iter_content(chunk_size=4096):
        try:
            yield chunk.decode()
        except UnicodeDecodeError:
            yield chunk.decode("unicode-escape")


def provider(base: str, query: str) -> Iterator[str]:
    # The query rides on the base URL's path: /api/chat?... is what the server sees.
    yield from Aivvm.create_completion("", MESSAGES, True, base_url=f"{base}/?{query}#", retries=0)


FLOOR = "raw socket + UTF-8 decode"
KEPT_FLOOR = "raw socket + UTF-8 decode, text kept"

READERS: dict[str, Callable[[str, str], Iterator[bytes | str]]] = {
    "raw socket": raw_socket,
    FLOOR: raw_socket_text,
    KEPT_FLOOR: raw_socket_text_kept,
    "original (iter_content 4096)": original,
    "Aivvm provider": provider,
}


def delays(
    reader: Callable[[str, str], Iterator[bytes | str]], base: str, framing: str, count: int
) -> list[float]:
    """Write-to-read delays in ms for each timed piece."""
    out: list[float] = []
    buffer = ""
    for piece in reader(base, f"mode=stamps&count={count}&interval=0.02&framing={framing}"):
        now = time.monotonic_ns()
        text = piece.decode("latin-1") if isinstance(piece, bytes) else piece
        buffer += text
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            # Chunked framing shows up in the raw socket's bytes as "\r\n40\r\n" before a stamp.
            stamp = line.rsplit("\r\n", 1)[-1].partition("|")[0]
            if len(stamp) >= 6 and stamp.isdigit():  # not a chunk-size line
                out.append((now - int(stamp)) / 1e6)
    return out


def throughput(
    reader: Callable[[str, str], Iterator[bytes | str]], base: str, size: int
) -> tuple[float, int]:
    """Seconds ``reader`` takes for ``size`` bytes, and the minor page faults it took meanwhile."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in reader(base, f"mode=bulk&size={size}&framing=chunked"):
        pass
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def decode_ceiling(size: int) -> float:
    """MB/s of UTF-8 decoding alone, in memory, of the same text in the server's pieces.

    No reader that hands out ``str`` can go faster than this, whatever its socket does. It is
    a generous bound: no socket, no framing, and one piece decoded over and over, so the bytes
    are always in the CPU's cache.
    """
    pieces = [BULK_PIECE] * (size // len(BULK_PIECE))
    decoder = codecs.getincrementaldecoder("utf-8")()
    started = time.perf_counter()
    for piece in pieces:
        decoder.decode(piece)
    return len(BULK_PIECE) * len(pieces) / (time.perf_counter() - started) / 1e6


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="timed pieces per run")
    parser.add_argument("--size-mb", type=float, default=50)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    proc, base = start_chunkserver()
    lines: list[str] = []
    try:
        lines.append("### Write-to-read delay (ms), a piece every 20 ms\n")
        lines.append("| framing | reader | p50 | p99 | pieces | p50 - raw p50 | target |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for framing in FRAMINGS:
            floor = None
            for name, reader in READERS.items():
                got = delays(reader, base, framing, args.count)
                p50, p99 = pct(got, 0.5), pct(got, 0.99)
                floor = p50 if floor is None else floor
                verdict = ""
                if reader is provider:
                    verdict = "met (≤ 2 ms)" if p50 - floor <= 2 else "MISSED (> 2 ms)"
                lines.append(
                    f"| {framing} | {name} | {p50:.2f} | {p99:.2f} | {len(got)} | "
                    f"{p50 - floor:+.2f} | {verdict} |"
                )
        # Whole pieces of the server's text: a body cut inside a character is no UTF-8.
        size = max(1, int(args.size_mb * 1024 * 1024) // len(BULK_PIECE)) * len(BULK_PIECE)
        lines.append(
            f"\n### Throughput, {args.size_mb:g} MB of multi-byte UTF-8 (chunked), "
            f"{THROUGHPUT_ROUNDS} rounds\n"
        )
        lines.append(
            "MB/s is each reader's median. The provider's ratio to the raw socket that also "
            "decodes UTF-8 (the floor of any reader that hands out text) is the median of the "
            "rounds' paired ratios: in each round every reader reads twice, in mirrored order, "
            "and the ratio is of the two readers' total times, so both meet the machine's "
            "speed of the moment. Page faults are the reader's minor faults per read of the "
            "whole body (median): memory the process had to take fresh from the system.\n"
        )
        lines.append(
            "| reader | MB/s | page faults | ratio to raw socket | ratio to raw socket + decode |"
        )
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        runs: dict[str, list[float]] = {name: [] for name in READERS}
        faults: dict[str, list[int]] = {name: [] for name in READERS}
        ceilings = []
        paired: dict[str, list[float]] = {FLOOR: [], KEPT_FLOOR: []}
        for round_ in range(THROUGHPUT_ROUNDS):
            # Each reader goes twice, in mirrored order (A B C D D C B A, or the reverse), so
            # a drift in the machine's speed during the round weighs on every reader alike.
            names = list(READERS)
            if round_ % 2:
                names.reverse()
            seconds = dict.fromkeys(READERS, 0.0)
            for name in names + names[::-1]:
                elapsed, taken = throughput(READERS[name], base, size)
                runs[name].append(size / elapsed / 1e6)
                faults[name].append(taken)
                seconds[name] += elapsed
            for floor_name, ratios in paired.items():
                ratios.append(seconds[floor_name] / seconds["Aivvm provider"])
            ceilings.append(decode_ceiling(size))
        rates = {name: statistics.median(rates) for name, rates in runs.items()}
        ceiling = statistics.median(ceilings)
        for name, rate in rates.items():
            lines.append(
                f"| {name} | {rate:,.0f} | {statistics.median(faults[name]):,.0f} | "
                f"{rate / rates['raw socket']:.2f} | {rate / rates[FLOOR]:.2f} |"
            )
        lines.append(
            f"| UTF-8 decode alone, in memory, no socket | {ceiling:,.0f} | | "
            f"{ceiling / rates['raw socket']:.2f} | {ceiling / rates[FLOOR]:.2f} |"
        )
        ratio = statistics.median(paired[FLOOR])
        verdict = "met" if ratio >= 0.8 else "MISSED"
        lines.append(
            f"\nProvider / (raw socket + UTF-8 decode), paired: **{ratio:.2f}** (rounds: "
            + ", ".join(f"{r:.2f}" for r in paired[FLOOR])
            + f"); target 0.8: {verdict}."
        )
        kept = statistics.median(paired[KEPT_FLOOR])
        lines.append(
            f"\nProvider / (raw socket + UTF-8 decode, text kept), paired: **{kept:.2f}** "
            "(rounds: " + ", ".join(f"{r:.2f}" for r in paired[KEPT_FLOOR]) + ")."
        )
    finally:
        proc.terminate()
        proc.wait()
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
