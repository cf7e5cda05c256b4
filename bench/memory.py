"""Peak memory of a kernel after a 10 MB reply and after a 10,000-turn conversation.

Figures are read inside a real kernel: its peak and current resident set size, and the
Python heap that tracemalloc sees (now and at its peak), after each step.

``python bench/memory.py [--reply-mb 10] [--turns 10000]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faultserver import Big, FaultServer  # noqa: E402
from tests.kernel import Kernel  # noqa: E402

# Peak and current resident set size from /proc/self/status (VmHWM, VmRSS): ru_maxrss would
# not do, as Linux keeps it across execve, so a kernel started from a big process reports
# that process's peak.
PROBE = """
import json, tracemalloc, gc
gc.collect()
_vm = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm"))
print("MEM", json.dumps({"peak_rss_mb": int(_vm["VmHWM"].split()[0]) / 1024,
      "rss_mb": int(_vm["VmRSS"].split()[0]) / 1024,
      "traced_mb": tracemalloc.get_traced_memory()[0] / 1e6,
      "traced_peak_mb": tracemalloc.get_traced_memory()[1] / 1e6}))
"""

TURNS = """
import time
from aivvm_magic.conversation import Turn
_conv = aivvm.chats.get("big")
_t = time.perf_counter()
for _i in range({turns}):
    _conv.record(Turn(prompt=f"question {{_i}} " * 10, reply=f"answer {{_i}} " * 30,
                      model="gpt-3.5-turbo", temperature=0.7, system="s",
                      started="2026-01-01T00:00:00+00:00", duration=0.1, complete=True,
                      source="cell", cell_id=None, error=None))
_build = time.perf_counter() - _t
_path = "/tmp/aivvm-bench-big.json"
_t = time.perf_counter()
_conv.export(_path)
_export = time.perf_counter() - _t
_t = time.perf_counter()
_loaded = type(_conv).load(_path)
_import = time.perf_counter() - _t
_t = time.perf_counter()
_msgs = _conv.messages("next", max_chars=96_000)
_trim = time.perf_counter() - _t
print("TIMES", json.dumps({{"build": _build, "export": _export, "import": _import, "trim": _trim,
      "kept_messages": len(_msgs)}}))
"""


def mem(kernel: Kernel) -> dict[str, float]:
    out = kernel.execute(PROBE).stdout()
    return json.loads(out.split("MEM", 1)[1])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reply-mb", type=float, default=10)
    parser.add_argument("--turns", type=int, default=10_000)
    args = parser.parse_args(argv)
    size = int(args.reply_mb * 1024 * 1024)
    kernel = Kernel()
    rows = []
    try:
        kernel.execute(
            "%load_ext aivvm_magic\nimport tracemalloc; tracemalloc.start()\n"
            "from aivvm_magic.magics import magics_for\naivvm = magics_for(get_ipython())"
        )
        rows.append(("kernel with the extension loaded", mem(kernel), ""))
        with FaultServer() as server:
            server.enqueue(Big(size, framing="chunked"))
            started = time.perf_counter()
            run = kernel.execute(
                f"%%aivvm -c big-reply --base-url {server.url}\nsend it", timeout=600
            )
            elapsed = time.perf_counter() - started
            assert run.status == "ok", run.reply["content"]
        rows.append(
            (
                f"after a {args.reply_mb:g} MB reply (widget, then static bundle)",
                mem(kernel),
                f"{elapsed:.1f} s",
            )
        )
        kernel.execute(
            "aivvm.chats.remove('big-reply'); get_ipython().run_line_magic('reset', '-f out')"
        )
        rows.append(("after dropping that conversation", mem(kernel), ""))
        times = json.loads(
            kernel.execute(TURNS.format(turns=args.turns)).stdout().split("TIMES")[1]
        )
        rows.append(
            (
                f"after a {args.turns:,}-turn conversation (plus a loaded copy)",
                mem(kernel),
                f"export {times['export']:.2f} s, import {times['import']:.2f} s, "
                f"trim {times['trim'] * 1000:.1f} ms",
            )
        )
    finally:
        kernel.close()
    lines = [
        "### Kernel memory\n",
        "| state | peak RSS MB | RSS MB | Python heap MB (tracemalloc) | heap peak MB | note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, m, note in rows:
        lines.append(
            f"| {label} | {m['peak_rss_mb']:.0f} | {m['rss_mb']:.0f} | {m['traced_mb']:.1f} | "
            f"{m['traced_peak_mb']:.1f} | {note} |"
        )
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
