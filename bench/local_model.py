"""What the HTTP path costs the local engine: server + Aivvm client vs llama-cpp-python alone.

Both sides run the same GGUF file with the same settings (context, threads, seed), the same
system and user message, temperature 0 and the same ``max_tokens``, in the same process and
the same run, taking turns so that a busy machine slows both alike:

- direct: ``Llama.create_chat_completion(stream=True)`` on a model of its own;
- HTTP: ``start_server(engine="local")`` and ``Aivvm.create_completion(stream=True)``.

Tokens are counted the same way on both sides: the final reply text, tokenized with the
model's own tokenizer (at temperature 0 both sides write the same text, which is checked).
Time to first token is from the call to the first non-empty piece of text; tokens/s is tokens
over the time from the call to the last piece. Medians over ``--repeats`` runs, after one
warm-up run each.

A last table measures how soon generation stops when the HTTP client closes its reply.

``python bench/local_model.py [--max-tokens 128] [--repeats 5] [--threads N] [--model PATH]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivvm_magic.providers import Aivvm  # noqa: E402
from aivvm_magic.server import ServerHandle, start_server  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPT = "Explain how a bicycle works, in detail."
STORY = "Write a very long story about a dragon, in ten chapters."
DIRECT = "llama-cpp-python direct"
HTTP = "server + Aivvm client"


def timed(pieces: Iterator[str]) -> tuple[str, float, float]:
    """Read ``pieces`` to the end: the text, seconds to the first piece and to the last."""
    start = time.perf_counter()
    first = last = None
    parts = []
    for piece in pieces:
        if not piece:
            continue
        last = time.perf_counter()
        first = first or last
        parts.append(piece)
    if first is None or last is None:
        raise RuntimeError("the model wrote nothing")
    return "".join(parts), first - start, last - start


def direct_pieces(llama: Any, max_tokens: int) -> Iterator[str]:
    """The reply's text pieces straight from llama-cpp-python."""
    stream = llama.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        temperature=0.0,
        max_tokens=max_tokens,
        stream=True,
    )
    for chunk in stream:
        yield chunk["choices"][0]["delta"].get("content") or ""


def http_pieces(server: ServerHandle) -> Iterator[str]:
    """The reply's text chunks through the reference server and the Aivvm client."""
    return Aivvm.create_completion(
        "gpt-3.5-turbo",
        [{"role": "user", "content": PROMPT}],
        stream=True,
        base_url=server.url,
        temperature=0.0,
        system_message=SYSTEM,
    )


def disconnect_stop(server: ServerHandle, read: int = 4) -> tuple[float, int]:
    """Close a long reply after ``read`` chunks: seconds until the token loop ended, and how
    many tokens it generated after the close."""
    engine: Any = server.engine
    reply = Aivvm.create_completion(
        "gpt-4",
        [{"role": "user", "content": STORY}],
        stream=True,
        base_url=server.url,
        temperature=0.7,
        system_message=SYSTEM,
    )
    for _ in range(read):
        next(reply)
    run = engine.runs[-1]
    tokens = run.tokens
    reply.close()
    closed = time.monotonic()
    if not run.finished.wait(30):
        raise RuntimeError("generation did not stop")
    return run.ended_at - closed, run.tokens - tokens


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print a markdown report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    parser.add_argument("--model", default="", help="GGUF file (default: the engine's)")
    args = parser.parse_args(argv)

    options: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.threads:
        options["n_threads"] = args.threads
    if args.model:
        options["model_path"] = args.model
    load_avg = os.getloadavg()[0]
    started = time.perf_counter()
    server = start_server(engine="local", **options)
    engine: Any = server.engine
    start_seconds = time.perf_counter() - started
    try:
        # Imported after the engine, which imports it with the OpenMP settings it needs.
        import llama_cpp

        llama = llama_cpp.Llama(
            model_path=str(engine.model_path),
            n_ctx=engine.n_ctx,
            n_threads=engine.n_threads,
            n_threads_batch=engine.n_threads,
            seed=engine.seed,
            verbose=False,
        )

        def count(text: str) -> int:
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False))

        sides: dict[str, Callable[[], Iterator[str]]] = {
            DIRECT: lambda: direct_pieces(llama, args.max_tokens),
            HTTP: lambda: http_pieces(server),
        }
        results: dict[str, list[tuple[str, float, float]]] = {name: [] for name in sides}
        for repeat in range(args.repeats + 1):
            for name, pieces in sides.items():
                result = timed(pieces())
                if repeat:  # the first round warms caches and is not counted
                    results[name].append(result)
        texts = {text for runs in results.values() for text, _, _ in runs}
        sizes = {text: count(text) for text in texts}
        tokens = statistics.median(sizes.values())

        stops = [disconnect_stop(server) for _ in range(3)]
        model = f"{engine.model_file} ({engine.model_mb} MB)"
        settings = (
            f"n_ctx {engine.n_ctx}, {engine.n_threads} threads, temperature 0, "
            f"max_tokens {args.max_tokens}, {tokens:g} tokens per reply"
        )
        same = "the same reply on both sides" if len(texts) == 1 else "REPLIES DIFFERED"
        lines = [
            f"### Local engine: {model}, {settings}\n",
            f"Medians of {args.repeats} runs each, taking turns; load average at start "
            f"{load_avg:.2f} on {os.cpu_count()} CPUs. Model load: {engine.load_seconds:.2f} s "
            f"(server start with the llama-cpp-python import: {start_seconds:.2f} s); "
            f"{same}.\n",
            "| path | time to first token (ms) | total (s) | tokens/s | tokens/s after the first |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        rates = {}
        for name, runs in results.items():
            ttft = statistics.median(first for _, first, _ in runs)
            total = statistics.median(last for _, _, last in runs)
            rate = statistics.median(sizes[text] / last for text, _, last in runs)
            decode = statistics.median(
                (sizes[text] - 1) / (last - first) for text, first, last in runs
            )
            rates[name] = rate
            lines.append(
                f"| {name} | {ttft * 1000:.0f} | {total:.2f} | {rate:.1f} | {decode:.1f} |"
            )
        # Runs take turns, so each HTTP run has a direct run just before it under much the
        # same load; the median of those pairs' ratios shrugs off the load drifting.
        direct_runs, http_runs = results.values()
        ratio = statistics.median(
            (sizes[h_text] / h_last) / (sizes[d_text] / d_last)
            for (d_text, _, d_last), (h_text, _, h_last) in zip(direct_runs, http_runs, strict=True)
        )
        lines.append(
            f"\nHTTP / direct throughput: **{ratio:.3f}** (median of {args.repeats} paired "
            f"runs; ratio of the medians above: {rates[HTTP] / rates[DIRECT]:.3f}). The HTTP "
            f"path costs {100 * (1 - ratio):.1f}% of the throughput; target: under 5%.\n"
        )
        lines.append("| client closes its reply after 4 chunks | run 1 | run 2 | run 3 |")
        lines.append("| --- | ---: | ---: | ---: |")
        lines.append(
            "| token loop ended after (ms) | "
            + " | ".join(f"{seconds * 1000:.0f}" for seconds, _ in stops)
            + " |"
        )
        lines.append(
            "| tokens generated after the close | "
            + " | ".join(str(extra) for _, extra in stops)
            + " |"
        )
        llama.close()
    finally:
        server.close()
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
