"""Start-up cost: what ``%load_ext aivvm_magic`` adds to IPython, and the first cell's time.

Each figure comes from fresh processes (median of several), since import caches would hide
the cost after the first run. The first ``%%aivvm`` cell starts the embedded server, so it is
measured with the echo engine and, when installed, the local model engine.

``python bench/startup.py [--runs 5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
t1 = time.perf_counter()
result = {"ipython": t1 - t0}
if sys.argv[1] != "bare":
    ip.run_line_magic("load_ext", "aivvm_magic")
    t2 = time.perf_counter()
    result["load_ext"] = t2 - t1
    heavy = [m for m in ("requests", "markdown_it", "nh3", "ipywidgets", "llama_cpp")
             if m in sys.modules]
    result["heavy_loaded"] = heavy
if sys.argv[1].startswith("cell"):
    from aivvm_magic.magics import magics_for
    m = magics_for(ip)
    m.display_mode = "text"
    m.embedded_engine = sys.argv[2]
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        t3 = time.perf_counter()
        ip.run_cell_magic("aivvm", "--no-history", "Say hello in five words.")
        t4 = time.perf_counter()
        ip.run_cell_magic("aivvm", "--no-history", "Say hello in five words.")
        t5 = time.perf_counter()
    result["first_cell"] = t4 - t3
    result["second_cell"] = t5 - t4
print(json.dumps(result))
"""


def probe(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=600
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(runs: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]


def local_available() -> bool:
    from aivvm_magic.embedded import local_available as available

    return available()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    bare, loaded = [], []
    for _ in range(args.runs):  # interleaved, so machine load hits both alike
        bare.append(probe("bare"))
        loaded.append(probe("load"))
    lines = [
        "### Start-up (median of fresh processes)\n",
        "| measurement | seconds |",
        "| --- | ---: |",
        f"| bare IPython shell start | {median(bare, 'ipython'):.3f} |",
        f"| `%load_ext aivvm_magic` on top | {median(loaded, 'load_ext'):.3f} |",
    ]
    heavy = loaded[-1]["heavy_loaded"]
    lines.append(f"| heavy modules loaded by `%load_ext` | {', '.join(heavy) or 'none'} |")
    engines = ["echo"] + (["local"] if local_available() else [])
    for engine in engines:
        runs = [probe("cell", engine) for _ in range(max(1, args.runs // 2))]
        lines.append(
            f"| first `%%aivvm` cell, embedded {engine} engine (starts the server) "
            f"| {median(runs, 'first_cell'):.3f} |"
        )
        lines.append(f"| second cell, {engine} engine | {median(runs, 'second_cell'):.3f} |")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
