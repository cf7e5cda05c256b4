"""The history database under load: logging 10,000 turns, searching them, two kernels at once.

Turns are logged as a session logs them: recorded into conversations that a ``TurnLog``
follows, each written to the database when it is recorded (one transaction a turn). Their
prompts and replies are made of words drawn from a fixed vocabulary (seeded), 20 to 120 words
each, so searches meet a realistic spread of common and rare words. Searches are what
``%aivvm log --search`` runs (the best 10 matches). The two writers are real processes that
start on the same instant against a new file, as two kernels would.

``python bench/history.py [--turns 10000] [--writers-turns 500]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivvm_magic.conversation import ConversationStore, Turn  # noqa: E402
from aivvm_magic.conversation.database import HistoryDatabase  # noqa: E402
from aivvm_magic.conversation.turn_log import TurnLog  # noqa: E402

WORDS = (
    "python generator coroutine list tuple dictionary function class module package import "
    "river mountain bread cheese museum train station ticket weekend lisbon porto rain sun "
    "notebook kernel cell widget panel model reply prompt history search database index "
    "apple orange banana garden flower tree forest ocean island bridge castle market coffee "
    "tea recipe oven minute hour morning evening music guitar piano story chapter letter "
    "number matrix vector gradient network layer token context window memory thread lock"
).split()
TURNS_PER_CONVERSATION = 100
SEARCHES = ["python", "generator coroutine", "rain lisbon museum", "replies", "zeppelin"]


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def log_turns(path: str, prefix: str, count: int, seed: int) -> tuple[list[float], list[str]]:
    """Log ``count`` turns into conversations of 100 turns; seconds per turn, and warnings."""
    rng = random.Random(seed)
    database = HistoryDatabase(path)
    warnings: list[str] = []
    log = TurnLog(lambda: database, warn=warnings.append)
    store = ConversationStore(made=log.follow)
    times = []
    for n in range(count):
        conversation = store.get(f"{prefix}-{n // TURNS_PER_CONVERSATION}")
        turn = Turn(
            prompt=text(rng, 20, 60),
            reply=text(rng, 40, 120),
            model="gpt-3.5-turbo",
            temperature=0.7,
            system="",
            started="2024-05-01T10:00:00.000+00:00",
            duration=1.0,
            complete=True,
            source="cell",
        )
        started = time.perf_counter()
        conversation.record(turn)
        times.append(time.perf_counter() - started)
    database.close()
    return times, warnings


def writer_main(path: str, name: str, count: int, start_at: float) -> None:
    """One of the concurrent writers (run in a process of its own)."""
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.perf_counter()
    times, warnings = log_turns(path, name, count, seed=sum(name.encode()))
    wall = time.perf_counter() - started
    print(json.dumps({"wall": wall, "median": statistics.median(times), "warnings": warnings}))


def concurrent_writers(directory: Path, count: int) -> dict[str, object]:
    path = directory / "two-kernels.db"
    start_at = time.time() + 2.0
    writers = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", str(path), name, str(count), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("kernel-a", "kernel-b")
    ]
    results = [json.loads(w.communicate(timeout=600)[0].strip().splitlines()[-1]) for w in writers]
    database = HistoryDatabase(path)
    kept = database.count_turns()
    live = [database.conversation(c.id)[1] for c in database.conversations(limit=100)]
    database.close()
    return {
        "kept": kept,
        "live": sum(len(turns) for turns in live),
        "walls": [r["wall"] for r in results],
        "medians": [r["median"] for r in results],
        "warnings": sum(len(r["warnings"]) for r in results),
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--writers-turns", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20, help="runs of each search")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aivvm-bench-history-") as tmp:
        directory = Path(tmp)
        path = directory / "history.db"
        started = time.perf_counter()
        times, warnings = log_turns(str(path), "bench", args.turns, seed=1)
        wall = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
        database = HistoryDatabase(path)
        rows = []
        for words in SEARCHES:
            runs = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                hits = database.search(words, limit=10)
                runs.append(time.perf_counter() - began)
            rows.append((words, len(hits), statistics.median(runs), max(runs)))
        began = time.perf_counter()
        database.recent(limit=10)
        recent_time = time.perf_counter() - began
        number = database.conversations(limit=1)[0].id
        began = time.perf_counter()
        loaded = database.conversation(number)[1]
        load_time = time.perf_counter() - began
        database.close()
        two = concurrent_writers(directory, args.writers_turns)
    times.sort()
    lines = [
        f"### History database ({args.turns:,} turns in conversations of "
        f"{TURNS_PER_CONVERSATION})\n",
        "| measurement | result |",
        "| --- | ---: |",
        f"| log {args.turns:,} turns, one transaction each | {wall:.2f} s, {size_mb:.1f} MB "
        f"(with the WAL); {len(warnings)} warnings |",
        f"| one turn logged (median / p99 / slowest) | {ms(statistics.median(times))} / "
        f"{ms(times[int(len(times) * 0.99)])} / {ms(times[-1])} ms |",
    ]
    for words, hits, median, slowest in rows:
        lines.append(
            f"| search `{words}` ({hits} of 10 shown; median / slowest of {args.repeat}) "
            f"| {ms(median)} / {ms(slowest)} ms |"
        )
    lines += [
        f"| `%aivvm log`: the last 10 turns | {ms(recent_time)} ms |",
        f"| `%aivvm resume`: read a {len(loaded)}-turn conversation | {ms(load_time)} ms |",
        f"| two processes, {args.writers_turns} turns each at once: turns kept | "
        f"{two['kept']:,} of {2 * args.writers_turns:,} ({two['live']:,} live); "
        f"{two['warnings']} warnings |",
        "| the same: wall time of each writer; median turn | "
        + ", ".join(f"{w:.2f} s" for w in two["walls"])  # type: ignore[attr-defined]
        + "; "
        + ", ".join(f"{ms(m)} ms" for m in two["medians"])  # type: ignore[attr-defined]
        + " |",
    ]
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
