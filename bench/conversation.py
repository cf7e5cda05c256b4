"""Time to first token through a long conversation with the local engine, three ways.

The same 20-turn conversation (the model's own replies carried forward, temperature 0) is
answered by one local engine in three modes, one after the other, in the same process:

- afresh: every prompt evaluated from its first token;
- engine: the engine as it ships, which keeps the previous prompt's evaluation in whole,
  aligned batches (``PromptCache``) and evaluates only the rest;
- llama-cpp-python's reuse: what llama-cpp-python does by itself, reusing the longest common
  prefix of whatever the context last held. It is fastest, and it can change replies: the
  last column counts the turns whose reply differs from the afresh run's.

Time to first token is from the engine's ``generate`` call to its first piece of text (the
HTTP path adds about a millisecond). "evaluated" is the prompt tokens the turn had to evaluate.

``python bench/conversation.py [--turns 20] [--max-tokens 48]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivvm_magic.server.engines import ChatRequest  # noqa: E402
from aivvm_magic.server.local import LocalEngine, common_prefix_length  # noqa: E402

TOPICS = [
    "rivers", "mountains", "bread", "cats", "the moon", "trains", "chess", "tea", "volcanoes",
    "bees", "rain", "castles", "jazz", "glass", "maps", "owls", "salt", "kites", "clocks",
    "whales", "deserts", "honey", "bridges", "comets",
]  # fmt: skip

AFRESH, ENGINE, NATIVE = "afresh", "engine (whole batches kept)", "llama-cpp-python's reuse"


def use_mode(engine: Any, mode: str) -> None:
    """Make ``engine`` prepare its context the way ``mode`` says, from now on."""
    shipped = type(engine)._reuse_prompt.__get__(engine)
    if mode == AFRESH:
        engine._prompt_cache.clear()
        engine._reuse_prompt = lambda prompt: (engine._prompt_cache.clear(), shipped(prompt))[1]
    elif mode == ENGINE:
        engine._prompt_cache.clear()
        engine._reuse_prompt = shipped
    else:

        def native(prompt: list[int]) -> int:
            # Leave the context as the previous request left it; llama-cpp-python reuses the
            # longest common prefix (all but one token when the whole prompt is there).
            held = engine._llama.input_ids[: engine._llama.n_tokens].tolist()
            return min(common_prefix_length(held, prompt), len(prompt) - 1)

        engine._reuse_prompt = native


def converse(engine: Any, turns: int) -> list[tuple[str, float, int, int]]:
    """One conversation: per turn, the reply, seconds to its first piece, the prompt's tokens
    and how many of them were evaluated."""
    messages: list[dict[str, str]] = []
    results = []
    for turn in range(turns):
        topic = TOPICS[turn % len(TOPICS)]
        messages.append({"role": "user", "content": f"Tell me one fact about {topic}."})
        request = ChatRequest(model_id="local", messages=list(messages), prompt="", temperature=0)
        started = time.perf_counter()
        first = None
        pieces = []
        for piece in engine.generate(request):
            first = first or time.perf_counter() - started
            pieces.append(piece)
        run = engine.runs[-1]
        reply = "".join(pieces)
        evaluated = run.prompt_tokens - run.cached_tokens
        results.append((reply, first or 0.0, run.prompt_tokens, evaluated))
        messages.append({"role": "assistant", "content": reply})
    return results


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print a markdown report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    engine = LocalEngine(max_tokens=args.max_tokens)
    try:
        runs = {}
        for mode in (AFRESH, ENGINE, NATIVE):
            use_mode(engine, mode)
            runs[mode] = converse(engine, args.turns)
    finally:
        engine.close()
    last = args.turns
    lines = [
        f"### A {last}-turn conversation: time to first token\n",
        f"{engine.model_file}, n_ctx {engine.n_ctx}, n_batch {engine.n_batch}, "
        f"{engine.n_threads} threads, temperature 0, replies of at most {args.max_tokens} "
        "tokens; one run of each mode, one after the other.\n",
        f"| mode | turn {last}: first token (ms) | turn {last}: prompt tokens | turn {last}: "
        f"evaluated | median first token, turns 2-{last} (ms) | replies unlike afresh |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, results in runs.items():
        reply, first, prompt, evaluated = results[-1]
        median = statistics.median(first for _, first, _, _ in results[1:])
        differ = sum(a[0] != b[0] for a, b in zip(results, runs[AFRESH], strict=True))
        lines.append(
            f"| {mode} | {first * 1000:.0f} | {prompt} | {evaluated} | {median * 1000:.0f} | "
            f"{differ} of {last} |"
        )
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
