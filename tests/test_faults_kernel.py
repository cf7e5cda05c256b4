"""``%%aivvm`` in a real kernel meets a sample of :data:`tests.faults.FAULTS`: the widget
path, and a kernel that survives every fault."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.faults import FAULTS, KEY, expected_cell_message
from tests.faultserver import FaultServer
from tests.kernel import WIDGET_VIEW, Kernel

KERNEL_FAULTS = [
    case
    for case in FAULTS
    if case.id
    in (
        "403-cloudflare",
        "500",
        "cut-chunked",
        "reset-mid-body",
        "stall-mid-body",
        "stall-before-headers",
        "gzip-corrupt",
        "307-to-another-host",
    )
]


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


def test_every_fault_in_a_kernel_leaves_it_alive_and_the_next_cell_working(kernel: Kernel):
    with FaultServer() as server:
        setup = kernel.execute(
            "%load_ext aivvm_magic\n"
            f"%config AivvmMagics.base_url = {server.url!r}\n"
            "%config AivvmMagics.retries = 0\n"
            "%config AivvmMagics.read_timeout = 0.5\n"
            f"%config AivvmMagics.api_key = {KEY!r}\n"
            "import json\n"
            "from aivvm_magic.magics import magics_for\n"
            "aivvm = magics_for(get_ipython())\n"
        )
        assert setup.status == "ok", setup.reply
        first = kernel.execute("%%aivvm -c k\nbefore any fault", cell_id="k0")
        assert first.status == "ok", first.reply
        expected_turns = 1
        for number, case in enumerate(KERNEL_FAULTS, 1):
            server.enqueue(*case.behaviours(server))
            run = kernel.execute(f"%%aivvm -c k\nfault {case.id}", cell_id=f"k{number}")
            assert run.status == "error", (case.id, run.reply)
            assert run.reply["content"]["ename"] == "AivvmError"
            (error,) = run.of_type("error")
            (line,) = error["content"]["traceback"]
            assert expected_cell_message(case, server.url + "/api/chat") in line, line
            # The static bundle last (a fault quicker than the live widget's first showing has
            # no widget before it); the widget is cleared for reuse.
            bundle = run.final_bundle()
            assert WIDGET_VIEW not in bundle and run.widget_released()
            plain = bundle["text/plain"]
            if case.partial:
                assert plain.startswith(case.partial) and "[incomplete · " in plain
                assert "⚠" in bundle["text/html"]
                expected_turns += 1
            else:
                assert plain.startswith("\n[failed · ")
            assert KEY not in json.dumps(run.messages, default=str)
            alive = kernel.execute("print(6 * 7)", timeout=10)
            assert alive.stdout() == "42\n"
        check = kernel.execute(
            "c = aivvm.chats.get('k')\n"
            "print(json.dumps([[t.prompt, t.complete, t.error] for t in c.turns]))"
        )
        turns = json.loads(check.stdout())
        assert len(turns) == expected_turns
        assert turns[0] == ["before any fault", True, None]
        assert all(not complete and error for _prompt, complete, error in turns[1:])
        after = kernel.execute("%%aivvm -c k\nand the next cell works", cell_id="k-last")
        assert after.status == "ok", after.reply
        assert after.final_bundle()["text/plain"] == "and the next cell works"
        # No connection left open but the one the kernel's session keeps for reuse.
        assert server.wait_for(lambda: server.open_connections <= 1, timeout=3)
