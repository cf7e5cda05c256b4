"""The chat panel, driven like a front end would, with no browser.

Widgets talk to a recording comm (the approach of ipywidgets' own test utilities), so every
message a front end would receive is kept and can be searched; the shell is a real
``InteractiveShell`` with the extension loaded, and replies come from the reference server
over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import comm
import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

from aivvm_magic import ChatPanel
from aivvm_magic.conversation import ConversationEvent
from aivvm_magic.magics import AivvmMagics, magics_for
from aivvm_magic.server import ServerHandle, start_server
from tests.faultserver import FaultServer, Reply, openai_sse
from tests.htmlcheck import assert_safe

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LIVE_REPLY = re.compile(r'<div class="aivvm-reply aivvm-live">(.*?)</div>', re.DOTALL)


# --------------------------------------------------------------------------------------------
# A recording comm


class RecordingComm:
    """Stands in for a kernel comm: records what would go to the front end."""

    # ipywidgets only sends state when its comm has a kernel.
    kernel = "recording"

    def __init__(self, log: list[tuple[str, str, Any]], **kwargs: Any) -> None:
        self.comm_id = kwargs.get("comm_id") or uuid.uuid4().hex
        self.messages: list[Any] = []
        self.closed = False
        self._log = log
        log.append((self.comm_id, "open", kwargs.get("data")))

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass

    def on_close(self, callback: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.messages.append(data)
        self._log.append((self.comm_id, "send", data))

    def close(self, *args: Any, **kwargs: Any) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def comm_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """Every comm message of the test: (comm id, "open" or "send", data)."""
    log: list[tuple[str, str, Any]] = []
    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: RecordingComm(log, **kwargs))
    return log


def value_updates(widget: Any) -> int:
    """How many state updates carrying ``value`` the widget sent to the front end."""
    return sum(
        1
        for data in widget.comm.messages
        if data and data.get("method") == "update" and "value" in data.get("state", {})
    )


# --------------------------------------------------------------------------------------------
# The shell, servers and panels


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The process's test shell with the extension loaded afresh, cells in text mode."""
    # start_ipython() makes the shell on its first call only (conftest may have made it).
    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "aivvm_magic")
    shell.run_line_magic("config", 'AivvmMagics.display_mode = "text"')
    yield shell
    shell.run_line_magic("unload_ext", "aivvm_magic")
    # %config writes to the shell's config, which the next instance would inherit.
    shell.config.pop("AivvmMagics", None)


def magics(shell: InteractiveShell) -> AivvmMagics:
    found = magics_for(shell)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def fast_server() -> Iterator[ServerHandle]:
    with start_server(engine="echo") as server:
        yield server


@pytest.fixture(scope="module")
def medium_server() -> Iterator[ServerHandle]:
    with start_server(engine="echo", delay=0.03) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ServerHandle]:
    with start_server(engine="echo", delay=0.1) as server:
        yield server


def use(shell: InteractiveShell, server: ServerHandle) -> None:
    shell.run_line_magic("config", f"AivvmMagics.base_url = {server.url!r}")


@pytest.fixture
def chat(request: pytest.FixtureRequest) -> str:
    """A conversation name no other test uses."""
    return re.sub(r"\W", "-", request.node.name)[:40] + "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def make_panel(ip: InteractiveShell) -> Iterator[Callable[..., ChatPanel]]:
    made: list[ChatPanel] = []

    def make(chat: str = "default") -> ChatPanel:
        panel = ChatPanel(chat, magics=magics(ip))
        made.append(panel)
        return panel

    yield make
    for panel in made:
        panel.stop()
        panel.close()
        # The model list is fetched in the background; let it end before its server does.
        futures.wait([panel.models_loaded], timeout=5)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def live_reply(value: str) -> str | None:
    """The streaming reply's text in a transcript value, or None when nothing streams."""
    match = LIVE_REPLY.search(value)
    if match is None:
        return None
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def words(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{n}" for n in range(count))


def run_cell(shell: InteractiveShell, chat: str, text: str) -> None:
    shell.run_cell_magic("aivvm", f"-c {chat}", text)


# --------------------------------------------------------------------------------------------
# One conversation, several views


def test_send_from_panel_joins_the_conversation_the_cells_use(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    assert panel.send("hello from the panel") == "hello from the panel"
    conversation = magics(ip).chats[chat]
    assert conversation is panel.conversation
    turn = conversation.last_turn
    assert turn is not None and turn.source == "panel" and turn.complete
    assert turn.reply == "hello from the panel"
    assert "hello from the panel</p>" in panel.transcript.value

    # Typing and pressing Send takes the same path, and empties the message box.
    panel.message.value = "  typed into the box\n"
    panel.send_button.click()
    assert panel.message.value == ""
    wait_until(lambda: len(conversation) == 2 and not conversation.busy)
    assert conversation.last_turn.reply == "typed into the box"

    run_cell(ip, chat, "and now a cell")
    messages = fast_server.requests[-1]["messages"]
    assert messages[:4] == [
        {"role": "user", "content": "hello from the panel"},
        {"role": "assistant", "content": "hello from the panel"},
        {"role": "user", "content": "typed into the box"},
        {"role": "assistant", "content": "typed into the box"},
    ]
    assert messages[-1] == {"role": "user", "content": "and now a cell"}
    assert conversation.last_turn.source == "cell"
    assert "You, in a cell" in panel.transcript.value


def test_an_empty_message_is_not_sent(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    before = fast_server.stats.started
    assert panel.send("  \n ") is None
    panel.send_button.click()
    assert "type a message first" in panel.status.value
    assert fast_server.stats.started == before
    assert len(panel.conversation) == 0


def test_a_cell_reply_streams_into_the_panel(
    ip: InteractiveShell, medium_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, medium_server)
    panel = make_panel(chat)
    prompt = words("w", 25)
    samples: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(panel.transcript.value)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run_cell(ip, chat, prompt)
    finally:
        done.set()
        sampler.join(5)
    partial = [text for text in map(live_reply, samples) if text]
    assert partial, "the panel never showed the reply while it streamed"
    assert any(prompt.startswith(text) and text != prompt for text in partial)
    assert live_reply(panel.transcript.value) is None
    assert f"<p>{prompt}</p>" in panel.transcript.value
    assert panel.conversation.last_turn.source == "cell"


def test_two_panels_on_one_conversation_stay_identical(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    first, second = make_panel(chat), make_panel(chat)
    first.send("from the first panel")
    assert first.transcript.value == second.transcript.value
    run_cell(ip, chat, "from a cell")
    assert first.transcript.value == second.transcript.value
    second.send("from the second panel")
    assert first.transcript.value == second.transcript.value
    assert first.transcript.value.count('class="aivvm-turn"') == 3


def test_switching_conversations_rebinds_the_panel(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    panel.send("in the first chat")
    other = chat + "-other"
    panel.chat_picker.value = other
    assert panel.chat == other and other in magics(ip).chats
    assert "No messages yet" in panel.transcript.value
    assert other in panel.chat_picker.options
    panel.send("in the other chat")
    assert magics(ip).chats[other].last_turn.reply == "in the other chat"
    panel.switch(chat)
    assert panel.chat_picker.value == chat
    shown = panel.transcript.value
    assert "in the first chat" in shown and "in the other chat" not in shown
    # The old conversation no longer reaches the panel.
    run_cell(ip, other, "a cell in the other chat")
    assert panel.transcript.value == shown
    panel.close()
    run_cell(ip, chat, "after the panel closed")
    assert panel.transcript.value == shown


def test_one_thread_draws_every_panel(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    panels = [make_panel(chat), make_panel(chat), make_panel(chat + "-other")]
    for panel in panels:
        assert panel.send("hello") == "hello"
    names = [thread.name for thread in threading.enumerate()]
    assert names.count("aivvm-render") == 1
    assert all(panel.session.render_loop.running for panel in panels)
    assert "hello" in panels[2].transcript.value


# --------------------------------------------------------------------------------------------
# Stop, waiting and the kernel


def test_stop_keeps_the_partial_reply_marked(
    ip: InteractiveShell, slow_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, slow_server)
    panel = make_panel(chat)
    prompt = words("slow", 60)
    result: list[str | None] = []
    sender = threading.Thread(target=lambda: result.append(panel.send(prompt)), daemon=True)
    disconnected = slow_server.stats.disconnected
    sender.start()
    wait_until(lambda: len(live_reply(panel.transcript.value) or "") > 15)
    assert not panel.stop_button.disabled

    began = time.monotonic()
    panel.stop_button.click()
    sender.join(2)
    took = time.monotonic() - began
    assert not sender.is_alive()
    assert took < 0.5, f"stopping took {took:.2f} s"

    partial = result[0]
    assert partial and prompt.startswith(partial) and partial != prompt
    turn = panel.conversation.last_turn
    assert turn is not None and not turn.complete and turn.error == "stopped"
    assert turn.reply == partial
    assert "incomplete: stopped" in panel.transcript.value
    assert panel.stop_button.disabled
    assert slow_server.wait_for(lambda: slow_server.stats.disconnected > disconnected)

    assert panel.send("again") == "again"
    assert panel.conversation.last_turn.complete


def test_concurrent_sends_never_interleave(
    ip: InteractiveShell, medium_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, medium_server)
    panel, other = make_panel(chat), make_panel(chat)
    # Each turn's events, in order: a turn that started before the last one finished would
    # show as two "turn_started" in a row.
    events: list[str] = []

    def listen(event: ConversationEvent) -> None:
        events.append(event.kind)

    unsubscribe = panel.conversation.subscribe(listen, kinds=["turn_started", "turn_finished"])
    prompts = [words("alpha", 12), words("beta", 12)]
    results: dict[str, str | None] = {}
    threads = [
        threading.Thread(target=lambda p=p: results.__setitem__(p, panel.send(p)), daemon=True)
        for p in prompts
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        unsubscribe()
    assert results == {p: p for p in prompts}
    turns = panel.conversation.turns
    assert len(turns) == 2 and {t.prompt for t in turns} == set(prompts)
    assert events == ["turn_started", "turn_finished"] * 2
    for turn in turns:
        assert turn.complete and turn.source == "panel"
        assert turn.reply == turn.prompt
    value = panel.transcript.value
    assert value.index(f"<p>{turns[0].reply}</p>") < value.index(f"<p>{turns[1].reply}</p>")
    assert value == other.transcript.value


def test_a_send_while_the_conversation_is_busy_waits_then_is_refused(
    ip: InteractiveShell, slow_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, slow_server)
    ip.run_line_magic("config", "AivvmMagics.busy_timeout = 0.3")
    try:
        first, second = make_panel(chat), make_panel(chat)
        assert first.send(words("long", 40), wait=False) is None
        wait_until(lambda: first.conversation.busy)
        began = time.monotonic()
        assert second.send("me too") == ""
        assert 0.25 < time.monotonic() - began < 2
        assert "busy" in second.status.value
        time.sleep(0.2)  # the live status keeps saying so while the other reply streams
        assert "busy" in second.status.value
        first.stop()
        wait_until(lambda: not first.conversation.busy)
        assert [t.prompt for t in first.conversation.turns] == [words("long", 40)]
    finally:
        ip.run_line_magic("config", "AivvmMagics.busy_timeout = 30.0")


def test_the_kernel_stays_responsive_while_a_panel_reply_streams(
    ip: InteractiveShell, slow_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, slow_server)
    panel = make_panel(chat)
    began = time.monotonic()
    assert panel.send(words("busy", 30), wait=False) is None
    assert time.monotonic() - began < 0.2
    wait_until(lambda: panel.conversation.busy)
    result = ip.run_cell("1 + 1")
    assert result.success and result.result == 2
    assert panel.conversation.busy, "the reply should still be streaming"
    panel.stop()
    wait_until(lambda: not panel.conversation.busy and panel.stop_button.disabled)


def test_a_failed_reply_is_reported_in_the_status_line(
    ip: InteractiveShell, make_panel: Any, chat: str
) -> None:
    with start_server(engine="echo") as server:
        url = server.url
    ip.run_line_magic("config", f"AivvmMagics.base_url = {url!r}")
    ip.run_line_magic("config", "AivvmMagics.retries = 0")
    try:
        panel = make_panel(chat)
        assert panel.send("anyone there?") == ""
        status = html.unescape(panel.status.value)
        assert "failed" in status and "⚠" in status
        assert len(panel.conversation) == 0
        assert panel.stop_button.disabled
    finally:
        ip.run_line_magic("config", "AivvmMagics.retries = 2")


def test_a_reply_cut_at_the_token_limit_says_so_in_the_status_line(
    ip: InteractiveShell, make_panel: Any, chat: str, fault: FaultServer
) -> None:
    models = {"object": "list", "data": [{"id": "llama3.2", "object": "model"}]}
    listing = Reply(200, json.dumps(models).encode(), headers={"Content-Type": "application/json"})
    fault.enqueue(listing)  # for the panel's model list
    ip.run_line_magic("config", f"AivvmMagics.base_url = {fault.url!r}")
    ip.run_line_magic("config", 'AivvmMagics.provider = "openai"')
    panel = make_panel(chat)
    futures.wait([panel.models_loaded], timeout=5)
    fault.enqueue(Reply(chunks=[openai_sse("the start of", finish_reason="length")]))
    assert panel.send("Go") == "the start of"
    wait_until(lambda: "token limit" in panel.status.value)
    assert "incomplete" not in panel.status.value  # complete, as far as the protocol goes
    assert panel.conversation.turns[-1].complete
    fault.enqueue(Reply(chunks=[openai_sse("a whole reply", finish_reason="stop")]))
    assert panel.send("Again") == "a whole reply"
    wait_until(lambda: "13 chars" in panel.status.value)
    assert "token limit" not in panel.status.value


def test_errors_in_the_worker_go_to_showtraceback(
    ip: InteractiveShell, make_panel: Any, chat: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[BaseException | None] = []
    monkeypatch.setattr(ip, "showtraceback", lambda *a, **k: shown.append(sys.exc_info()[1]))
    ip.run_line_magic("config", 'AivvmMagics.base_url = ""')
    ip.run_line_magic("config", 'AivvmMagics.embedded_engine = "no-such-engine"')
    try:
        panel = make_panel(chat)
        assert panel.send("hello") == ""
        assert shown and all(exc is not None for exc in shown)
        assert "failed" in panel.status.value
    finally:
        ip.run_line_magic("config", 'AivvmMagics.embedded_engine = ""')


@pytest.mark.parametrize("delay", [0.0, 0.0003], ids=["burst", "spread"])
def test_coalesced_transcript_updates(
    ip: InteractiveShell, make_panel: Any, chat: str, delay: float
) -> None:
    # "burst": 2,000 chunks as fast as they come; "spread": the same over about a second,
    # so the flusher's pace (about 20 updates a second) is what limits the updates.
    with start_server(engine="echo", delay=delay) as server:
        use(ip, server)
        panel = make_panel(chat)
        replies: list[Any] = []

        def keep(event: ConversationEvent) -> None:
            if event.kind == "turn_started":
                replies.append(panel.conversation.pending)

        unsubscribe = panel.conversation.subscribe(keep)
        before = value_updates(panel.transcript)
        prompt = "x " * 2000
        began = time.monotonic()
        try:
            assert panel.send(prompt) == prompt.strip()
        finally:
            unsubscribe()
        took = time.monotonic() - began
    updates = value_updates(panel.transcript) - before
    (reply,) = replies
    chunks = reply.chunks  # the pieces the client read, as they came
    assert chunks >= 1000
    assert 1 <= updates < chunks / 20, (updates, chunks)
    assert updates <= 25 * took + 3, (updates, took)
    assert panel.transcript.value.count("x x x") > 0 and live_reply(panel.transcript.value) is None


# --------------------------------------------------------------------------------------------
# Export, the static bundle, the key


def test_export_then_import_round_trip(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str, tmp_path: Any
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    panel.send("first: **bold** and `code`")
    panel.send("second <b>tags</b> & ampersands")
    shown = panel.transcript.value
    for fmt, name in (("json", "chat.json"), ("markdown", "chat.md")):
        panel.export_path.value = str(tmp_path / "chat.json")
        panel.export_format.value = fmt
        if fmt == "markdown":
            # Picking the format keeps the extension in step.
            assert panel.export_path.value == str(tmp_path / "chat.md")
        panel.export_button.click()
        assert "exported 2 turns" in panel.status.value
        assert (tmp_path / name).exists()
        ip.run_line_magic("aivvm", f"reset -c {chat}")
        assert "No messages yet" in panel.transcript.value
        ip.run_line_magic("aivvm", f"import {tmp_path / name} -c {chat}")
        assert panel.transcript.value == shown


def test_export_errors_are_short_status_notes(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str, tmp_path: Any
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    panel.send("something to export")
    assert panel.export(str(tmp_path / "missing" / "chat.json")) is None
    status = html.unescape(panel.status.value)
    assert "failed" in status and "⚠" in status and len(status) < 400
    assert panel.export(str(tmp_path / "chat.md"), fmt="json") is None
    assert "must end in .json" in panel.status.value
    assert panel.export(str(tmp_path / "noext")) == str(tmp_path / "noext.json")


def test_the_api_key_never_reaches_the_front_end(
    ip: InteractiveShell,
    slow_server: ServerHandle,
    make_panel: Any,
    chat: str,
    comm_log: list[tuple[str, str, Any]],
    tmp_path: Any,
) -> None:
    canary = "sk-canary-" + uuid.uuid4().hex
    use(ip, slow_server)
    ip.run_line_magic("config", f"AivvmMagics.api_key = {canary!r}")
    try:
        panel = make_panel(chat)
        panel.refresh_models()
        panel.send("hello with a key")
        panel.send(words("stopped", 30), wait=False)
        wait_until(lambda: bool(live_reply(panel.transcript.value)))
        panel.stop()
        wait_until(lambda: panel.stop_button.disabled)
        panel.export(str(tmp_path / "chat.json"))
        assert slow_server.requests[-1]["key"] == "<redacted>"  # it was sent, to the server
        bundle = json.dumps(panel._repr_mimebundle_())
        states = [json.dumps(w.get_state(), default=str) for w in [panel, *panel._descendants()]]
        messages = json.dumps(comm_log, default=str)
        for text in (bundle, messages, *states):
            assert canary not in text
            assert canary[len("sk-canary-") :] not in text
    finally:
        ip.run_line_magic("config", 'AivvmMagics.api_key = ""')


class RecordingPublisher(DisplayPublisher):
    """Keeps what would be published to the front end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.published: list[dict[str, Any]] = []

    def publish(self, data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> None:
        self.published.append({"data": data, **kwargs})


def test_the_static_bundle_is_a_sanitised_transcript_kept_current(
    ip: InteractiveShell,
    fast_server: ServerHandle,
    make_panel: Any,
    chat: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(ip, fast_server)
    publisher = RecordingPublisher(shell=ip)
    monkeypatch.setattr(ip, "display_pub", publisher)
    panel = make_panel(chat)
    panel.display()
    # Two outputs: the live panel, which has no text of its own, then its static copy.
    live, shown = publisher.published
    assert live["data"] == {
        "text/plain": "",
        WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": panel.model_id},
    }
    display_id = shown["transient"]["display_id"]
    assert WIDGET_VIEW not in shown["data"]
    assert "No messages yet" in shown["data"]["text/html"]

    payload = "<img src=x onerror=alert(1)> <script>alert(2)</script>"
    panel.send(payload)
    update = publisher.published[-1]
    assert update.get("update") is True
    assert update["transient"]["display_id"] == display_id
    bundle = update["data"]
    assert bundle == panel.static_bundle()
    assert panel._repr_mimebundle_()[WIDGET_VIEW]["model_id"] == panel.model_id
    assert payload in bundle["text/plain"]
    static = bundle["text/html"]
    parsed = assert_safe(static, extra_tags=frozenset({"div", "small"}))
    assert "&lt;img src=x onerror=alert(1)&gt;" in static
    assert "<img" not in static.lower() and "<script" not in static.lower()
    assert parsed.text.count(payload) == 2  # the prompt and the echoed reply, as text
    assert_safe(panel.transcript.value, extra_tags=frozenset({"div", "small"}))

    ip.run_line_magic("aivvm", f"reset -c {chat}")
    assert "No messages yet" in publisher.published[-1]["data"]["text/html"]


def test_the_panel_finds_the_running_shell(ip: InteractiveShell, fast_server: ServerHandle) -> None:
    use(ip, fast_server)
    panel = ChatPanel()
    try:
        assert panel.session is magics(ip).session
        assert panel.conversation is magics(ip).chats.get("default")
    finally:
        panel.close()
    # Without the extension loaded, the panel loads it.
    ip.run_line_magic("unload_ext", "aivvm_magic")
    panel = ChatPanel("fresh")
    try:
        assert magics_for(ip).session is panel.session
        assert "fresh" in panel.session.chats
    finally:
        panel.close()
        # Later tests configure the instance loaded now, as the module fixture did.
        ip.run_line_magic("config", 'AivvmMagics.display_mode = "text"')


def test_settings_follow_config_and_apply_to_panel_messages(
    ip: InteractiveShell, fast_server: ServerHandle, make_panel: Any, chat: str
) -> None:
    use(ip, fast_server)
    panel = make_panel(chat)
    ip.run_line_magic("config", 'AivvmMagics.model = "gpt-4"')
    try:
        assert panel.model_picker.value == "gpt-4"
        panel.temperature_slider.value = 0.25
        panel.system_input.value = "Be brief."
        panel.send("with settings")
        request = fast_server.requests[-1]
        assert request["model"]["id"] == "gpt-4"
        assert request["temperature"] == 0.25
        assert request["prompt"] == "Be brief."
        turn = panel.conversation.last_turn
        assert (turn.model, turn.temperature, turn.system) == ("gpt-4", 0.25, "Be brief.")
        assert magics(ip).temperature != 0.25  # the panel's choice stays the panel's
    finally:
        ip.run_line_magic("config", 'AivvmMagics.model = "gpt-3.5-turbo"')
