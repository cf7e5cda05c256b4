"""How soon a reply's first words leave the kernel: from the server's write to the iopub message.

A server process (``bench/chunkserver.py``) answers each request with a few pieces of text, one
every ``--interval`` seconds; each piece carries the ``time.monotonic_ns()`` of its write. A real
kernel (jupyter_client) runs the reply three ways, taking turns:

* **provider alone**: ``Aivvm.create_completion(...)`` in the kernel, the first chunk printed
  (a ``stream`` message): what the kernel's own output path costs, with no display;
* **%%aivvm cell**: the magic's live widget;
* **chat panel**: ``ChatPanel.send``, the panel's transcript widget.

For each, the delay is from the write of the first piece to the arrival, at this process, of
the first iopub message whose content carries that piece's stamp, on the same monotonic clock
(the iopub hop itself costs about a tenth of a millisecond).

``python bench/first_words.py [--runs 15] [--interval 0.2]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kernel import Kernel  # noqa: E402

# A piece is "<monotonic ns of its write>|" and padding.
STAMP = re.compile(r"(\d{12,})\|")

SETUP = """
%load_ext aivvm_magic
%config AivvmMagics.base_url = {url!r}
%config AivvmMagics.retries = 0
from aivvm_magic import Aivvm, ChatPanel
_panel = ChatPanel("bench-panel")
_panel.display()
"""

PROVIDER = """
for _chunk in Aivvm.create_completion("", [{"role": "user", "content": "hi"}], True,
                                      base_url=%r):
    print(_chunk, end="", flush=True)
"""

CELL = """%%aivvm --no-history
hi"""

PANEL = """_panel.send("hi")"""


def start_server(count: int, interval: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("chunkserver.py"))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AIVVM_CHUNKS": f"{count},{interval}"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT"):
        raise RuntimeError(f"the chunk server did not start: {line!r}")
    return process, f"http://127.0.0.1:{line.split()[1]}"


def first_delay(kernel: Kernel, code: str, timeout: float = 60) -> float:
    """Run ``code``; milliseconds from the first piece's write to the first message with it."""
    arrivals: list[tuple[int, str]] = []

    def arrived(message: dict[str, Any]) -> None:
        arrivals.append((time.monotonic_ns(), json.dumps(message["content"], default=str)))

    sent = time.monotonic_ns()
    run = kernel.execute(code, timeout=timeout, on_message=arrived)
    if run.status != "ok":
        raise RuntimeError(f"{code[:40]!r}: {run.reply['content']}")
    for received, content in arrivals:
        # Stamps written before this run (earlier replies still in a transcript) don't count.
        stamps = [int(found) for found in STAMP.findall(content) if int(found) > sent]
        if stamps:
            return (received - min(stamps)) / 1e6
    raise RuntimeError(f"no message carried the first piece for {code[:40]!r}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print a markdown report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--pieces", type=int, default=3)
    args = parser.parse_args(argv)
    server, url = start_server(args.pieces, args.interval)
    kernel = Kernel()
    try:
        kernel.execute(SETUP.format(url=url), timeout=120)
        ways = {
            "provider alone (a print)": PROVIDER % url,
            "%%aivvm cell (live widget)": CELL,
            "chat panel (transcript widget)": PANEL,
        }
        delays: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.runs + 1):  # the first round warms up and is not counted
            for name, code in ways.items():
                delays[name].append(first_delay(kernel, code))
        lines = [
            f"### First words: server write to iopub message, {args.runs} runs each\n",
            f"A reply of {args.pieces} pieces, one every {args.interval:g} s, from a server "
            "process; one kernel, the three ways taking turns.\n",
            "| way | p50 (ms) | p99 (ms) | min (ms) | max (ms) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, values in delays.items():
            counted = values[1:]
            lines.append(
                f"| {name} | {statistics.median(counted):.1f} | "
                f"{percentile(counted, 0.99):.1f} | {min(counted):.1f} | {max(counted):.1f} |"
            )
        lines.append("\nTarget: p50 ≤ 5 ms and p99 ≤ 20 ms for the cell and for the panel.")
    finally:
        kernel.close()
        server.terminate()
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
