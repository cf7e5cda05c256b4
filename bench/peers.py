"""``%%aivvm`` beside jupyter-ai's ``%%ai``, in real kernels, on the same reference server.

jupyter-ai-magics (from PyPI, the ``bench`` extra) reaches the reference server's OpenAI API
through ``OPENAI_API_BASE``, as its users point it at any OpenAI-compatible server; ``%%aivvm``
uses the Aivvm API of the same server, whose echo engine answers both alike: a reply of
``--words`` words, one every ``--delay`` seconds. Measured, each way taking turns:

* ``%load_ext`` time, in a fresh kernel each time (so neither profits from the other's imports);
* time from sending the cell to the first iopub message that shows the reply's first word, and
  to the end of the cell; the iopub messages the cell sent;
* what each does with a prompt that holds braces (code, JSON), and with a server that refuses
  the connection (the characters of the error the user is shown).

``python bench/peers.py [--runs 5] [--words 36] [--delay 0.05]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivvm_magic.server import start_server  # noqa: E402
from tests.kernel import Kernel  # noqa: E402

AIVVM = "%%aivvm"
AI = "%%ai"
LOAD = {AIVVM: "aivvm_magic", AI: "jupyter_ai_magics"}
MODEL = "openai-chat:gpt-3.5-turbo"
BRACES = 'Format this as JSON: {"name": "Ada", "born": 1815} and call f"{x:>10}".'

TIMED_LOAD = """
import time as _t
_s = _t.perf_counter()
get_ipython().run_line_magic("load_ext", {module!r})
print("LOADED", _t.perf_counter() - _s)
"""


def cell(way: str, text: str) -> str:
    """The cell that asks ``text`` the ``way`` way."""
    if way == AIVVM:
        return f"%%aivvm --no-history\n{text}"
    return f"%%ai {MODEL}\n{text}"


def load_seconds(way: str) -> float:
    kernel = Kernel()
    try:
        run = kernel.execute(TIMED_LOAD.format(module=LOAD[way]), timeout=120)
        if run.status != "ok":
            raise RuntimeError(f"loading {LOAD[way]} failed: {run.reply['content']}")
        return float(run.stdout().split()[-1])
    finally:
        kernel.close()


def ask(kernel: Kernel, way: str, text: str, first_word: str) -> dict[str, Any]:
    """Run one cell: seconds to the first message showing ``first_word``, to the end, the
    iopub messages, and the characters of any error shown."""
    arrivals: list[tuple[float, str]] = []

    def arrived(message: dict[str, Any]) -> None:
        # The cell's own text comes back in execute_input: that is not the reply.
        if message["msg_type"] != "execute_input":
            arrivals.append((time.perf_counter(), json.dumps(message["content"], default=str)))

    sent = time.perf_counter()
    run = kernel.execute(cell(way, text), timeout=300, on_message=arrived)
    ended = time.perf_counter()
    first = next((t for t, content in arrivals if first_word in content), None)
    errors = [m["content"] for m in run.messages if m["msg_type"] == "error"]
    shown = sum(len("\n".join(e.get("traceback", []))) for e in errors)
    if run.status != "ok" and not errors:
        shown = len(json.dumps(run.reply["content"]))
    return {
        "first": None if first is None else first - sent,
        "total": ended - sent,
        "messages": len(run.messages),
        "ok": run.status == "ok",
        "error_chars": shown,
        "error": errors[0]["ename"] + ": " + errors[0]["evalue"][:80] if errors else "",
    }


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print a markdown report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--words", type=int, default=36)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    words = " ".join(f"word{n}" for n in range(args.words))
    with start_server(engine="echo", delay=args.delay) as server:
        os.environ.update(OPENAI_API_BASE=f"{server.url}/v1", OPENAI_API_KEY="sk-bench")
        loads = {way: [load_seconds(way) for _ in range(args.runs)] for way in (AIVVM, AI)}
        kernel = Kernel()
        try:
            setup = (
                "%load_ext aivvm_magic\n%load_ext jupyter_ai_magics\n"
                f"%config AivvmMagics.base_url = {server.url!r}\n"
                "%config AivvmMagics.retries = 0\n"
            )
            if kernel.execute(setup, timeout=120).status != "ok":
                raise RuntimeError("the kernel could not load both extensions")
            replies: dict[str, list[dict[str, Any]]] = {AIVVM: [], AI: []}
            for _ in range(args.runs + 1):
                for way in replies:
                    replies[way].append(ask(kernel, way, words, "word0"))
            braces = {way: ask(kernel, way, BRACES, "Format") for way in replies}
            port = closed_port()
            refusing = (
                f"%config AivvmMagics.base_url = 'http://127.0.0.1:{port}'\n"
                f"import os; os.environ['OPENAI_API_BASE'] = 'http://127.0.0.1:{port}/v1'"
            )
            kernel.execute(refusing)
            refused = {way: ask(kernel, way, "hello", "hello") for way in replies}
        finally:
            kernel.close()

    def median(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{statistics.median(known):.2f}" if known else "never"

    lines = [
        f"### Peers in the same kernel: `%%aivvm` and jupyter-ai's `%%ai`, {args.runs} runs\n",
        f"A reply of {args.words} words, one every {args.delay:g} s, from the reference "
        f"server (`%%ai {MODEL}` through `OPENAI_API_BASE` to its `/v1`).\n",
        "| | `%load_ext` (s) | first words shown (s) | cell done (s) | iopub messages | "
        "a prompt with braces | a refused connection |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for way in (AIVVM, AI):
        runs = replies[way][1:]
        brace = braces[way]
        brace_note = "sent intact" if brace["ok"] else f"fails: {brace['error']}"
        refusal = refused[way]
        lines.append(
            f"| `{way}` | {statistics.median(loads[way]):.3f} | "
            f"{median([r['first'] for r in runs])} | {median([r['total'] for r in runs])} | "
            f"{statistics.median(r['messages'] for r in runs):g} | {brace_note} | "
            f"{refusal['error_chars']:,} characters of error |"
        )
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
