"""``%%aivvm`` in a real kernel: the live widget, coalescing, the static bundle, interrupts."""

from __future__ import annotations

import json
import threading
import time

import pytest

from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.faultserver import Raw
from tests.htmlcheck import assert_safe
from tests.kernel import WIDGET_VIEW, Kernel

XSS = (
    "<script>window.pwned=1</script> <img src=x onerror=window.pwned=1> "
    "<svg onload=window.pwned=1></svg> [click](javascript:window.pwned=1) "
    '<iframe src="javascript:window.pwned=1"></iframe> <a href="javascript:alert(1)">a</a>'
)


@pytest.fixture(scope="module")
def slow():
    with start_server(engine="echo", delay=0.1) as server:
        yield server


@pytest.fixture(scope="module")
def fast():
    with start_server(engine="echo") as server:
        yield server


@pytest.fixture(scope="module")
def kernel(fast):
    k = Kernel()
    setup = k.execute(
        "%load_ext aivvm_magic\n"
        f"%config AivvmMagics.base_url = {fast.url!r}\n"
        f"%config AivvmMagics.api_key = {CANARY!r}\n"
        "from aivvm_magic.magics import magics_for\n"
        "aivvm = magics_for(get_ipython())\n"
    )
    assert setup.status == "ok", setup.reply
    yield k
    k.close()


def state_values(execution) -> list[str]:
    """Every ``value`` a widget was sent, in order (opening state and updates)."""
    values = []
    for m in execution.of_type("comm_open", "comm_msg"):
        state = m["content"]["data"].get("state", {})
        if "value" in state:
            values.append(state["value"])
    return values


def test_reply_streams_into_a_widget_then_leaves_a_static_bundle(kernel, slow):
    words = " ".join(f"word{i}" for i in range(20))
    run = kernel.execute(f"%%aivvm --base-url {slow.url}\n{words}")
    assert run.status == "ok", run.reply
    first = run.of_type("display_data")[0]["content"]["data"]
    assert WIDGET_VIEW in first  # a live widget while streaming
    values = state_values(run)
    partial = [v for v in values if "word0" in v and "word19" not in v]
    assert len({*partial}) >= 2, "the reply should be seen growing at least twice"
    bundle = run.final_bundle()
    assert WIDGET_VIEW not in bundle
    assert bundle["text/plain"] == words
    assert words in bundle["text/html"] and "aivvm-status" in bundle["text/html"]
    # Once the static bundle is in place the live widget is emptied and kept for the next
    # reply, which shows in the same widget model instead of opening three new ones.
    assert run.widget_released()
    again = kernel.execute(f"%%aivvm --base-url {slow.url}\n{words}")
    assert again.status == "ok", again.reply
    assert not again.of_type("comm_open")
    shown = again.of_type("display_data")[0]["content"]["data"][WIDGET_VIEW]["model_id"]
    assert shown == first[WIDGET_VIEW]["model_id"]
    assert again.final_bundle()["text/plain"] == words


def test_a_reply_slow_to_start_shows_a_waiting_status_first(kernel, fault):
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    fault.enqueue(Raw(head, b"5\r\nhello\r\n0\r\n\r\n", delay=0.5, keep_alive=True))
    run = kernel.execute(f"%%aivvm --base-url {fault.url}\nhi")
    assert run.status == "ok", run.reply
    assert WIDGET_VIEW in run.of_type("display_data")[0]["content"]["data"]
    values = state_values(run)
    # Shown (well) before the first chunk arrives, with nothing but its status.
    assert "waiting…" in values[0] and "hello" not in values[0]
    assert run.final_bundle()["text/plain"] == "hello"
    assert run.widget_released()


def test_updates_are_coalesced_for_a_fast_5000_chunk_reply(kernel, fast):
    words = " ".join(f"w{i}" for i in range(5000))
    started = time.monotonic()
    # 29,000 characters: over GPT-3.5's input limit, within GPT-4-32K's.
    run = kernel.execute(f"%%aivvm -m gpt-4-32k\n{words}", timeout=120)
    elapsed = time.monotonic() - started
    assert run.status == "ok", run.reply
    updates = run.widget_updates()
    assert len(updates) <= 25 * elapsed + 5, (len(updates), elapsed)
    assert run.final_bundle()["text/plain"] == words  # complete, nothing dropped
    sent = sum(len(json.dumps(m["content"])) for m in updates)
    assert sent <= (len(updates) + 1) * (len(words) * 3 + 2000)


def test_model_output_cannot_inject_markup_anywhere(kernel):
    run = kernel.execute(f"%%aivvm\n{XSS}")
    assert run.status == "ok"
    html_parts = [v for v in state_values(run)]
    for m in run.of_type("display_data", "update_display_data"):
        html_parts.extend(str(v) for k, v in m["content"]["data"].items() if k != "text/plain")
    assert html_parts
    for part in html_parts:
        assert_safe(part, extra_tags=frozenset({"div", "small"}))
    assert "&lt;script&gt;" in run.final_bundle()["text/html"]


def test_rerun_with_the_same_cell_id_replaces_the_turn(kernel):
    kernel.execute("%aivvm reset -c rerun")
    kernel.execute("%%aivvm -c rerun\nfirst", cell_id="cell-a")
    kernel.execute("%%aivvm -c rerun\nsecond", cell_id="cell-b")
    kernel.execute("%%aivvm -c rerun\nfirst again", cell_id="cell-a")
    check = kernel.execute("print([t.prompt for t in aivvm.chats.get('rerun').turns])")
    assert check.stdout().strip() == "['first again']"


def test_interrupt_keeps_the_partial_reply_and_the_next_cell_runs(kernel):
    with start_server(engine="echo", delay=0.2) as server:
        words = " ".join(f"part{i}" for i in range(60))
        seen_update = threading.Event()

        def interrupt_after_first_text(message):
            if message["msg_type"] == "comm_msg" and "part1" in json.dumps(message["content"]):
                if not seen_update.is_set():
                    seen_update.set()
                    kernel.interrupt()

        run = kernel.execute(
            f"%%aivvm -c intr --base-url {server.url}\n{words}",
            on_message=interrupt_after_first_text,
        )
        timeline = [(m["msg_type"], json.dumps(m["content"])[:120]) for m in run.messages]
        # The cell ends in error (Run All stops there), shown as one line, not a traceback.
        assert run.status == "error", timeline
        content = run.reply["content"]
        assert content["ename"] == "ReplyInterrupted"  # a KeyboardInterrupt
        bundle = run.final_bundle()
        kept = len(bundle["text/plain"].rpartition("\n")[0])
        (error,) = run.of_type("error")
        assert error["content"]["traceback"] == [
            f"interrupted · partial reply kept ({kept:,} chars)"
        ]
        assert (
            bundle["text/plain"].startswith("part0 part1") and "incomplete" in bundle["text/plain"]
        )
        assert "part59" not in bundle["text/plain"]
        deadline = time.monotonic() + 5
        while server.stats.disconnected < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stats.disconnected == 1  # the server saw the client go away
        started = time.monotonic()
        after = kernel.execute(
            "t = aivvm.chats.get('intr').last_turn\nprint(t.complete, t.error, len(t.reply) > 0)"
        )
        assert time.monotonic() - started < 5
        assert after.stdout().split() == ["False", "interrupted", "True"]


def test_errors_show_one_short_line_and_no_key(kernel):
    run = kernel.execute("%%aivvm --base-url http://127.0.0.1:9\nhello")
    assert run.status == "error"
    content = run.reply["content"]
    assert content["ename"] == "AivvmError"
    error_msgs = run.of_type("error")
    assert error_msgs and error_msgs[0]["content"]["traceback"] == [
        "AivvmError: Could not connect to http://127.0.0.1:9/api/chat: connection refused"
    ]
    assert CANARY not in json.dumps(run.messages, default=str)


def test_the_pooled_widget_serves_one_reply_at_a_time_and_closes_on_unload(fast, slow):
    """Two replies streaming at once (one on a thread) each get a widget of their own; both
    go back to the pool, and unloading the extension closes them with their models."""
    k = Kernel()
    try:
        setup = k.execute(
            "%load_ext aivvm_magic\n"
            f"%config AivvmMagics.base_url = {fast.url!r}\n"
            "import threading\n"
            "from aivvm_magic.rendering.display import widget_pool\n"
        )
        assert setup.status == "ok", setup.reply
        both = k.execute(
            "ip = get_ipython()\n"
            # Ten words, 0.1 s apart: the thread's reply is still streaming when the cell's
            # own reply starts and ends.
            "t = threading.Thread(target=ip.run_cell_magic,\n"
            f"    args=('aivvm', '-c other --base-url {slow.url}', ' '.join(['x'] * 10)))\n"
            "t.start()\n"
            "ip.run_cell_magic('aivvm', '-c main', ' '.join(['y'] * 300))\n"
            "assert t.is_alive()\n"
            "t.join()\n"
        )
        assert both.status == "ok", both.reply
        shown = {
            m["content"]["data"][WIDGET_VIEW]["model_id"]
            for m in both.of_type("display_data")
            if WIDGET_VIEW in m["content"]["data"]
        }
        assert len(shown) == 2
        assert k.execute("print(len(widget_pool))").stdout().strip() == "2"
        unload = k.execute("%unload_ext aivvm_magic")
        assert unload.status == "ok", unload.reply
        closed = {m["content"]["comm_id"] for m in unload.of_type("comm_close")}
        assert shown <= closed and len(closed) == 4  # each widget and its layout
        assert k.execute("print(len(widget_pool))").stdout().strip() == "0"
    finally:
        k.close()
